// Limits over HTTP: 413 (body over --max-message-bytes), 429 (queue full), 503 (loading),
// 504 (--max-deadline), each with the OpenAI error body and the SDK's error class.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, test } from "node:test";
import { OpenAI, assertErrorBody, assertSdkError } from "./assertions.mjs";
import { dataUri, makePng, solidPng, testModelAnswer, truncated, userMessage } from "./fixtures.mjs";
import { postChat, request, startTestServer, waitForMetric } from "./server.mjs";

const PNG = { width: 24, height: 24, mean: [240, 220, 40], bytes: solidPng(24, 24, [240, 220, 40]) };
const QUESTION = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen";
const ANSWER = testModelAnswer(PNG, { query: QUESTION });  // 22 words = 22 tokens
const params = (extra = {}) => ({ model: "test", messages: userMessage(QUESTION, dataUri(PNG.bytes)), ...extra });

// A completion request body of exactly `length` bytes (padded in an unknown, ignored field).
function bodyOfLength(length) {
  const body = { ...params(), pad: "" };
  body.pad = "x".repeat(length - Buffer.byteLength(JSON.stringify(body)));
  const text = JSON.stringify(body);
  assert.equal(Buffer.byteLength(text), length);
  return text;
}

// A PNG of random pixels, stored uncompressed (about 3 * side * side bytes).
function noisePng(side) {
  const noise = randomBytes(3 * side * side);
  return makePng(side, side, (x, y) => noise.subarray(3 * (y * side + x), 3 * (y * side + x) + 3), { level: 0 });
}

describe("413: a body over the limit that --max-message-bytes sets", () => {
  const LIMIT = 100_000;

  // The HTTP body limit follows --max-message-bytes: an image the gRPC API accepts (under LIMIT
  // bytes) is accepted base64-encoded in a JSON body too, while bodies a few times LIMIT are not.
  test("an image under the limit is served; bodies well over it get 413 (raw and SDK), chunked ones 411", async () => {
    const server = await startTestServer([`--max-message-bytes=${LIMIT}`]);
    try {
      const client = server.client();
      const image = noisePng(180);
      assert.ok(image.length > 0.95 * LIMIT && image.length < LIMIT, `image of ${image.length} bytes`);
      const served = await client.chat.completions.create({
        model: "test", caption: "short", messages: userMessage(undefined, dataUri(image)),
      });
      assert.match(served.choices[0].message.content, /^a test image of 180×180 pixels, mostly /);

      const tooLarge = 4 * LIMIT;
      assertErrorBody(await postChat(server, bodyOfLength(tooLarge)), 413);

      // Transfer-Encoding: chunked, no Content-Length: bodies are paid from one memory budget
      // (--http-memory-bytes) before they are read, so they need a length: 411.
      const big = Buffer.from(bodyOfLength(tooLarge));
      const chunked = await fetch(server.httpUrl("/v1/chat/completions"), {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        duplex: "half",
        body: new ReadableStream({
          start(controller) {
            for (let at = 0; at < big.length; at += 16_384) controller.enqueue(big.subarray(at, at + 16_384));
            controller.close();
          },
        }),
      });
      const chunkedText = await chunked.text();
      let chunkedJson;
      try {
        chunkedJson = JSON.parse(chunkedText);
      } catch {}
      assertErrorBody({ status: chunked.status, headers: chunked.headers, text: chunkedText, json: chunkedJson }, 411);
      assert.match(chunkedJson.error.message, /Content-Length/);

      // Through the SDK, an image of 3 x LIMIT bytes (413 has no SDK subclass: APIError).
      const error = await assertSdkError(
        client.chat.completions.create({ model: "test", messages: userMessage("Big?", dataUri(noisePng(300))) }),
        OpenAI.APIError, 413);
      assert.equal(typeof error.error?.message, "string");

      const ok = await client.chat.completions.create(params());
      assert.equal(ok.choices[0].message.content, ANSWER.text, "still serving after the 413s");
    } finally {
      await server.stop();
    }
  });
});

describe("429: queue full", () => {
  test("with one running and one queued, completions and streams get RateLimitError", async () => {
    const server = await startTestServer(["--max-queue=1", "--max-concurrency=1", "--test-model-token-delay-ms=100"]);
    try {
      const client = server.client();
      // running: 20 tokens x 100 ms; queued behind it: 2 tokens
      const running = client.chat.completions.create(params({ max_tokens: 20 }));
      await waitForMetric(server, "moondream_requests_in_flight", {}, (v) => v === 1);
      const queued = client.chat.completions.create(params({ max_tokens: 2 }));
      await waitForMetric(server, "moondream_queue_depth", {}, (v) => v === 1);

      await assertSdkError(client.chat.completions.create(params({ max_tokens: 1 })), OpenAI.RateLimitError, 429);
      await assertSdkError(client.chat.completions.create(params({ max_tokens: 1, stream: true })),
                           OpenAI.RateLimitError, 429);
      assertErrorBody(await postChat(server, params({ max_tokens: 1 })), 429, { type: "rate_limit_error" });

      const [first, second] = await Promise.all([running, queued]);
      assert.equal(first.choices[0].message.content, truncated(ANSWER, 20).text);
      assert.equal(second.choices[0].message.content, truncated(ANSWER, 2).text);
      const after = await client.chat.completions.create(params({ max_tokens: 1 }));
      assert.equal(after.choices[0].message.content, "you", "served again once the queue drained");
    } finally {
      await server.stop();
    }
  });
});

describe("503: loading", () => {
  test("/readyz and completions answer 503 until the model is loaded, then 200", async () => {
    const server = await startTestServer(["--test-model-load-delay-ms=3000"], { readyEvent: "event=listening" });
    try {
      assert.equal(server.lines.some((l) => l.includes("event=serving")), false, "loaded too early for this test");
      for (const url of [server.httpUrl.bind(server), server.metricsUrl.bind(server)]) {
        const health = await request(url("/healthz"));
        assert.equal(health.status, 200);
        const ready = await request(url("/readyz"));
        assert.equal(ready.status, 503);
        assert.equal(ready.text, "loading\n");
      }
      const client = server.client();
      await assertSdkError(client.chat.completions.create(params()), OpenAI.InternalServerError, 503);
      assertErrorBody(await postChat(server, params()), 503, { type: "server_error" });
      assert.equal(server.lines.some((l) => l.includes("event=serving")), false,
                   "the model finished loading during the test: the 503s above prove nothing");

      await server.waitForLog("event=serving", 20_000);
      const ready = await request(server.httpUrl("/readyz"));
      assert.equal(ready.status, 200);
      assert.equal(ready.text, "ready\n");
      const completion = await client.chat.completions.create(params());
      assert.equal(completion.choices[0].message.content, ANSWER.text);
    } finally {
      await server.stop();
    }
  });
});

describe("504: --max-deadline", () => {
  test("a completion past the deadline is 504; a stream past it ends with an error event", async () => {
    const server = await startTestServer(["--max-deadline=1s", "--test-model-token-delay-ms=100"]);
    try {
      const client = server.client();
      // 22 tokens x 100 ms = 2.2 s > 1 s
      const start = Date.now();
      await assertSdkError(client.chat.completions.create(params()), OpenAI.InternalServerError, 504);
      const elapsed = Date.now() - start;
      assert.ok(elapsed >= 900 && elapsed < 3000, `504 after ${elapsed} ms, deadline 1 s`);
      assertErrorBody(await postChat(server, params()), 504, { type: "timeout" });

      // Streamed: the first tokens arrive, then an error event (the SDK throws APIError), no [DONE].
      const stream = await client.chat.completions.create(params({ stream: true }));
      const received = [];
      let streamError;
      try {
        for await (const chunk of stream) received.push(chunk.choices[0]?.delta?.content ?? "");
      } catch (e) {
        streamError = e;
      }
      assert.ok(streamError instanceof OpenAI.APIError, `stream ended without an error: ${received.join("")}`);
      assert.ok(streamError.error?.message, "error event without a message");
      assert.equal(streamError.type, "timeout");
      const text = received.join("");
      assert.ok(text.length > 0 && ANSWER.text.startsWith(text) && text !== ANSWER.text,
                `streamed before the deadline: ${JSON.stringify(text)}`);

      const raw = await postChat(server, params({ stream: true }));
      assert.equal(raw.status, 200);
      assert.ok(!raw.text.includes("[DONE]"), "a failed stream must not end with [DONE]");
      const lastEvent = raw.text.trimEnd().split("\n\n").at(-1);
      assert.match(lastEvent, /^data: \{"error":/);
      const event = JSON.parse(lastEvent.slice("data: ".length));
      assert.deepEqual(Object.keys(event.error).sort(), ["code", "message", "param", "type"]);

      const quick = await client.chat.completions.create(params({ max_tokens: 3 }));
      assert.equal(quick.choices[0].message.content, truncated(ANSWER, 3).text, "short requests still succeed");
    } finally {
      await server.stop();
    }
  });
});
