// A client that goes away (AbortController) cancels its request in the engine: the request
// ends CANCELLED (transport="http") long before it would have finished, and the server goes on.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { OpenAI } from "./assertions.mjs";
import { dataUri, solidPng, testModelAnswer, userMessage } from "./fixtures.mjs";
import { metricValue, scrape, startTestServer, waitForMetric } from "./server.mjs";

const DELAY_MS = 100;
const PNG = { width: 16, height: 16, mean: [0, 128, 128], bytes: solidPng(16, 16, [0, 128, 128]) };
// 80-word question: the answer is 88 tokens = 8.8 s at 100 ms per token.
const QUESTION = Array.from({ length: 80 }, (_, i) => `w${i}`).join(" ");
const params = (extra = {}) => ({ model: "test", messages: userMessage(QUESTION, dataUri(PNG.bytes)), ...extra });
// Cancellation must land within a few token steps, far sooner than the 8.8 s the request needs.
const CANCEL_WITHIN_MS = 3000;

let server;
let client;
before(async () => {
  server = await startTestServer([`--test-model-token-delay-ms=${DELAY_MS}`]);
  client = server.client();
});
after(() => server?.stop());

const cancelled = (method) => ({ transport: "http", method, code: "CANCELLED" });
async function count(labels) {
  return Math.max(0, metricValue(await scrape(server), "moondream_requests_total", labels));
}

describe("client disconnects cancel the request", () => {
  test("aborting a streaming request after its first tokens", async () => {
    const was = await count(cancelled("StreamChatCompletions"));
    const controller = new AbortController();
    const stream = await client.chat.completions.create(params({ stream: true }), { signal: controller.signal });
    let text = "";
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? "";
      if (text) controller.abort();  // the SDK ends the iteration quietly on abort
    }
    assert.ok(text.length > 0);
    const start = Date.now();
    await waitForMetric(server, "moondream_requests_total", cancelled("StreamChatCompletions"), (v) => v >= was + 1,
                        CANCEL_WITHIN_MS);
    await waitForMetric(server, "moondream_requests_in_flight", {}, (v) => v === 0, 1000);
    assert.ok(Date.now() - start < CANCEL_WITHIN_MS);
  });

  test("aborting a non-streaming request while it runs", async () => {
    const was = await count(cancelled("ChatCompletions"));
    const controller = new AbortController();
    const pending = client.chat.completions.create(params(), { signal: controller.signal });
    await waitForMetric(server, "moondream_requests_in_flight", {}, (v) => v === 1);
    controller.abort();
    await assert.rejects(pending, OpenAI.APIUserAbortError);
    await waitForMetric(server, "moondream_requests_total", cancelled("ChatCompletions"), (v) => v >= was + 1,
                        CANCEL_WITHIN_MS);
    await waitForMetric(server, "moondream_requests_in_flight", {}, (v) => v === 0, 1000);
  });

  test("aborting a queued request; then aborting the running one", async () => {
    const was = await count(cancelled("ChatCompletions"));
    const running = new AbortController();
    const queued = new AbortController();
    const first = client.chat.completions.create(params(), { signal: running.signal });
    await waitForMetric(server, "moondream_requests_in_flight", {}, (v) => v === 1);
    const second = client.chat.completions.create(params(), { signal: queued.signal });
    await waitForMetric(server, "moondream_queue_depth", {}, (v) => v === 1);
    queued.abort();
    await assert.rejects(second, OpenAI.APIUserAbortError);
    await waitForMetric(server, "moondream_requests_total", cancelled("ChatCompletions"), (v) => v >= was + 1,
                        CANCEL_WITHIN_MS);
    assert.equal(metricValue(await scrape(server), "moondream_requests_in_flight"), 1, "the running one goes on");
    running.abort();
    await assert.rejects(first, OpenAI.APIUserAbortError);
    await waitForMetric(server, "moondream_requests_total", cancelled("ChatCompletions"), (v) => v >= was + 2,
                        CANCEL_WITHIN_MS);
  });

  test("the server keeps serving (nothing left running)", async () => {
    const start = Date.now();
    const completion = await client.chat.completions.create(params({ max_tokens: 3 }));
    assert.equal(completion.choices[0].message.content, "you asked “w0");
    assert.ok(Date.now() - start < 2000, `a 3-token request took ${Date.now() - start} ms: something still runs`);
    const streamed = await client.chat.completions.create(params({ max_tokens: 2, stream: true }));
    let text = "";
    for await (const chunk of streamed) text += chunk.choices[0]?.delta?.content ?? "";
    assert.equal(text, "you asked");
    const scrapeText = await scrape(server);
    assert.equal(metricValue(scrapeText, "moondream_requests_in_flight"), 0);
    assert.equal(metricValue(scrapeText, "moondream_queue_depth"), 0);
    assert.ok(testModelAnswer(PNG, { query: QUESTION }).words.length > 80);
  });
});
