// The OpenAI-compatible HTTP front against the official OpenAI Node SDK (and raw fetch where
// the exact wire format matters), on one shared server with the weight-free `test` model.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { OpenAI, assertCompletion, assertErrorBody, assertSdkError, collectStream } from "./assertions.mjs";
import {
  JPEGS, MEME_SEARCH_PROMPT, MEME_SEARCH_TEST_IMAGE_DATA_URL, MEME_SEARCH_TEST_PROMPT,
  dataUri, fixture, makePng, meanColour, solidPng, testModelAnswer, truncated, userMessage,
} from "./fixtures.mjs";
import { metricValue, postChat, request, scrape, startTestServer } from "./server.mjs";

const RED = [200, 30, 30];
const PNG = { width: 64, height: 48, mean: RED, bytes: solidPng(64, 48, RED) };
const ASTRONAUT = { ...JPEGS.astronaut, bytes: fixture(JPEGS.astronaut.file) };
const HUBBLE = { ...JPEGS.hubble, bytes: fixture(JPEGS.hubble.file) };

let server;
let client;
before(async () => {
  server = await startTestServer();
  client = server.client();
});
after(() => server?.stop());

describe("chat completions", () => {
  test("PNG data URI + question: the test model's answer, usage, finish_reason, id, model", async () => {
    const question = "What colour is this picture?";
    const completion = await client.chat.completions.create({
      model: "test",
      messages: userMessage(question, dataUri(PNG.bytes)),
    });
    const answer = testModelAnswer(PNG, { query: question });
    assert.equal(answer.text, "you asked “What colour is this picture?” about a 64×48 red image");
    assertCompletion(completion, {
      model: "test", content: answer.text, finishReason: "stop",
      promptTokens: answer.promptTokens, completionTokens: answer.words.length,
    });
  });

  test("JPEG data URI (progressive 512x512)", async () => {
    const question = "Who is in the photo?";
    const completion = await client.chat.completions.create({
      model: "test",
      messages: userMessage(question, dataUri(ASTRONAUT.bytes, "image/jpeg")),
    });
    const answer = testModelAnswer(ASTRONAUT, { query: question });
    assertCompletion(completion, {
      model: "test", content: answer.text, finishReason: "stop",
      promptTokens: answer.promptTokens, completionTokens: answer.words.length,
    });
  });

  test("text parts are joined with a newline into one question, whatever their order", async () => {
    const completion = await client.chat.completions.create({
      model: "test",
      messages: [{
        role: "user",
        content: [
          { type: "text", text: "first line" },
          { type: "image_url", image_url: { url: dataUri(PNG.bytes) } },
          { type: "text", text: "second line" },
        ],
      }],
    });
    assert.equal(completion.choices[0].message.content,
                 testModelAnswer(PNG, { query: "first line\nsecond line" }).text);
  });

  test("image_url as a plain string and data:application/octet-stream (sniffed) work (raw)", async () => {
    const expected = testModelAnswer(PNG, { query: "What is it?" }).text;
    for (const url of [dataUri(PNG.bytes), dataUri(PNG.bytes, "application/octet-stream")]) {
      const plain = await postChat(server, {
        model: "test",
        messages: [{ role: "user", content: [{ type: "text", text: "What is it?" }, { type: "image_url", image_url: url }] }],
      });
      assert.equal(plain.status, 200, plain.text);
      assert.equal(plain.json.choices[0].message.content, expected);
    }
    const sniffed = await postChat(server, {
      model: "test",
      messages: userMessage("What is it?", dataUri(ASTRONAUT.bytes, "application/octet-stream")),
    });
    assert.equal(sniffed.status, 200, sniffed.text);
    assert.equal(sniffed.json.choices[0].message.content, testModelAnswer(ASTRONAUT, { query: "What is it?" }).text);
  });

  test("max_tokens cuts the answer: finish_reason length, completion_tokens = max_tokens", async () => {
    const answer = testModelAnswer(PNG, { query: "Describe it" });
    const completion = await client.chat.completions.create({
      model: "test", max_tokens: 3, messages: userMessage("Describe it", dataUri(PNG.bytes)),
    });
    const cut = truncated(answer, 3);
    assert.equal(cut.text, "you asked “Describe");
    assertCompletion(completion, {
      model: "test", content: cut.text, finishReason: "length",
      promptTokens: answer.promptTokens, completionTokens: 3,
    });
  });

  test("max_completion_tokens wins over max_tokens", async () => {
    const completion = await client.chat.completions.create({
      model: "test", max_tokens: 2, max_completion_tokens: 4, messages: userMessage("Describe it", dataUri(PNG.bytes)),
    });
    const cut = truncated(testModelAnswer(PNG, { query: "Describe it" }), 4);
    assert.equal(completion.choices[0].message.content, cut.text);
    assert.equal(completion.usage.completion_tokens, 4);
  });

  test("sampling settings, n=1 and unknown fields are accepted", async () => {
    const completion = await client.chat.completions.create({
      model: "test", temperature: 0.7, top_p: 0.9, seed: 42, n: 1, user: "tester",
      presence_penalty: 0, response_format: { type: "text" }, some_future_field: { x: [1, 2] },
      messages: userMessage("Describe it", dataUri(PNG.bytes)),
    });
    assert.equal(completion.choices[0].message.content, testModelAnswer(PNG, { query: "Describe it" }).text);
  });

  test("model missing or empty: the default model answers", async () => {
    for (const model of [undefined, ""]) {
      const response = await postChat(server, { model, messages: userMessage("Hi?", dataUri(PNG.bytes)) });
      assert.equal(response.status, 200, response.text);
      assert.equal(response.json.model, "test");
      assert.equal(response.json.choices[0].message.content, testModelAnswer(PNG, { query: "Hi?" }).text);
    }
  });
});

describe("captions", () => {
  const normal = testModelAnswer(PNG, { caption: "normal" });
  const short = testModelAnswer(PNG, { caption: "short" });

  test("an image-only message asks for a (normal) caption", async () => {
    const completion = await client.chat.completions.create({
      model: "test", messages: userMessage(undefined, dataUri(PNG.bytes)),
    });
    assert.equal(normal.text,
                 "a test image of 64×48 pixels in landscape format, mostly red with a mean colour of rgb(200, 30, 30) 🎨");
    assertCompletion(completion, {
      model: "test", content: normal.text, finishReason: "stop",
      promptTokens: normal.promptTokens, completionTokens: normal.words.length,
    });
  });

  test('the "caption" extension picks short or normal, and they differ', async () => {
    const got = {};
    for (const length of ["short", "normal"]) {
      const completion = await client.chat.completions.create({
        model: "test", caption: length, messages: userMessage(undefined, dataUri(PNG.bytes)),
      });
      got[length] = completion.choices[0].message.content;
      const expected = length === "short" ? short : normal;
      assertCompletion(completion, {
        model: "test", content: expected.text, finishReason: "stop",
        promptTokens: expected.promptTokens, completionTokens: expected.words.length,
      });
    }
    assert.equal(got.short, "a test image of 64×48 pixels, mostly red");
    assert.notEqual(got.short, got.normal);
  });
});

describe("streaming", () => {
  const question = "What is shown here?";
  const answer = testModelAnswer(PNG, { query: question });

  test("stream with include_usage: deltas concatenate to the non-streamed content, role first, usage last", async () => {
    const params = { model: "test", messages: userMessage(question, dataUri(PNG.bytes)) };
    const full = await client.chat.completions.create(params);
    const stream = await client.chat.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
    const { chunks, content } = await collectStream(stream);

    assert.equal(content, full.choices[0].message.content);
    assert.equal(content, answer.text);
    for (const chunk of chunks) {
      assert.equal(chunk.object, "chat.completion.chunk");
      assert.match(chunk.id, /^chatcmpl-[0-9a-f]+$/);
      assert.equal(chunk.id, chunks[0].id, "one id per stream");
      assert.equal(chunk.created, chunks[0].created);
      assert.equal(chunk.model, "test");
    }
    assert.deepEqual(chunks[0].choices[0].delta, { role: "assistant", content: "" }, "first chunk");
    const contentChunks = chunks.filter((c) => c.choices[0]?.delta?.content);
    assert.ok(contentChunks.length > 1, `the answer came in ${contentChunks.length} delta(s): not streamed`);

    const finishing = chunks.filter((c) => c.choices[0]?.finish_reason);
    assert.equal(finishing.length, 1, "exactly one chunk has a finish_reason");
    assert.equal(finishing[0].choices[0].finish_reason, "stop");
    assert.ok(chunks.indexOf(finishing[0]) > chunks.indexOf(contentChunks.at(-1)), "finish_reason after the content");

    const last = chunks.at(-1);
    assert.deepEqual(last.choices, [], "the usage chunk has no choices");
    assert.deepEqual(last.usage, full.usage);
    assert.deepEqual(last.usage, {
      prompt_tokens: answer.promptTokens, completion_tokens: answer.words.length,
      total_tokens: answer.promptTokens + answer.words.length,
    });
    assert.equal(chunks.filter((c) => c.usage).length, 1, "only the last chunk carries usage");
  });

  test("stream without include_usage has no usage chunk; max_tokens gives finish_reason length", async () => {
    const stream = await client.chat.completions.create({
      model: "test", stream: true, max_tokens: 2, messages: userMessage(question, dataUri(PNG.bytes)),
    });
    const { chunks, content } = await collectStream(stream);
    assert.equal(content, truncated(answer, 2).text);
    assert.ok(chunks.every((c) => c.choices.length === 1 && !c.usage), "a usage chunk was sent");
    assert.equal(chunks.at(-1).choices[0].finish_reason, "length");
  });

  test("a streamed caption with multi-byte characters (×, 🎨) arrives intact", async () => {
    const stream = await client.chat.completions.create({
      model: "test", stream: true, messages: userMessage(undefined, dataUri(PNG.bytes)),
    });
    const { content } = await collectStream(stream);
    assert.equal(content, testModelAnswer(PNG, { caption: "normal" }).text);
  });

  test("raw SSE: text/event-stream, data: lines, [DONE] last", async () => {
    const response = await fetch(server.httpUrl("/v1/chat/completions"), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        model: "test", stream: true, stream_options: { include_usage: true },
        messages: userMessage(question, dataUri(PNG.bytes)),
      }),
    });
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-type") ?? "", /^text\/event-stream/);
    const body = await response.text();
    assert.ok(body.endsWith("data: [DONE]\n\n"), `stream end: ${JSON.stringify(body.slice(-80))}`);
    const events = body.split("\n\n").slice(0, -1);
    for (const event of events) assert.match(event, /^data: /, `event ${JSON.stringify(event)}`);
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e.slice("data: ".length)));
    assert.equal(chunks.map((c) => c.choices[0]?.delta?.content ?? "").join(""), answer.text);
    assert.equal(chunks.at(-1).usage.completion_tokens, answer.words.length);
  });
});

describe("models", () => {
  test("models.list lists test; models.retrieve returns it", async () => {
    const ids = [];
    for await (const model of client.models.list()) {
      ids.push(model.id);
      assert.equal(model.object, "model");
      assert.equal(model.owned_by, "moondream-server");
      assert.ok(Number.isInteger(model.created));
    }
    assert.deepEqual(ids, ["test"]);
    const model = await client.models.retrieve("test");
    assert.equal(model.id, "test");
    assert.equal(model.object, "model");
    const raw = await request(server.httpUrl("/v1/models"));
    assert.equal(raw.status, 200);
    assert.equal(raw.json.object, "list");
    assert.deepEqual(Object.keys(raw.json.data[0]).sort(), ["created", "id", "object", "owned_by"]);
  });

  test("unknown model: NotFoundError (404, model_not_found) on retrieve, completion and stream", async () => {
    await assertSdkError(client.models.retrieve("no-such-model"), OpenAI.NotFoundError, 404, { code: "model_not_found" });
    const params = { model: "gpt-4o-mini", messages: userMessage("Hi?", dataUri(PNG.bytes)) };
    await assertSdkError(client.chat.completions.create(params), OpenAI.NotFoundError, 404, { code: "model_not_found" });
    await assertSdkError(client.chat.completions.create({ ...params, stream: true }), OpenAI.NotFoundError, 404,
                         { code: "model_not_found" });
    assertErrorBody(await postChat(server, params), 404, { code: "model_not_found" });
    assertErrorBody(await request(server.httpUrl("/v1/models/no-such-model")), 404, { code: "model_not_found" });
  });
});

describe("invalid requests: 400 with an OpenAI error body", () => {
  const png = dataUri(PNG.bytes);
  const cases = [
    ["string content (no image)", { messages: [{ role: "user", content: "What is this?" }] }],
    ["text part only (no image)", { messages: userMessage("What is this?") }],
    ["http image URL", { messages: userMessage("What?", "http://example.com/cat.png") }, /fetch/i],
    ["https image URL", { messages: userMessage("What?", "https://example.com/cat.png") }, /fetch/i],
    ["two images", {
      messages: [{ role: "user", content: [
        { type: "text", text: "Compare" },
        { type: "image_url", image_url: { url: png } },
        { type: "image_url", image_url: { url: png } },
      ] }],
    }],
    ["a system message", {
      messages: [{ role: "system", content: "You are helpful." }, ...userMessage("What?", png)],
    }],
    ["a developer message", {
      messages: [{ role: "developer", content: "Be brief." }, ...userMessage("What?", png)],
    }],
    ["an assistant message", {
      messages: [...userMessage("What?", png), { role: "assistant", content: "A cat." }],
    }],
    ["two user messages", { messages: [...userMessage("What?", png), ...userMessage("And?", png)] }],
    ["no messages", { messages: [] }],
    ["n=2", { n: 2, messages: userMessage("What?", png) }],
    ["bad base64", { messages: userMessage("What?", "data:image/png;base64,!!!not*base64###") }],
    ["corrupt image bytes", {
      messages: userMessage("What?", dataUri(Buffer.from("this is not an image, just some bytes"))),
    }],
    ["truncated PNG", { messages: userMessage("What?", dataUri(PNG.bytes.subarray(0, 60))) }],
    ["caption with text parts", { caption: "short", messages: userMessage("What?", png) }],
    ['caption "long"', { caption: "long", messages: userMessage(undefined, png) }],
  ];

  for (const [name, body, message] of cases) {
    test(name, async () => {
      const params = { model: "test", ...body };
      await assertSdkError(client.chat.completions.create(params), OpenAI.BadRequestError, 400, { message });
      assertErrorBody(await postChat(server, params), 400, { type: "invalid_request_error", message });
    });
  }

  test("a body that is not JSON", async () => {
    assertErrorBody(await postChat(server, "{not json"), 400, { type: "invalid_request_error" });
  });

  test("the server keeps answering after all of them", async () => {
    const completion = await client.chat.completions.create({ model: "test", messages: userMessage("Ok?", png) });
    assert.equal(completion.choices[0].message.content, testModelAnswer(PNG, { query: "Ok?" }).text);
  });
});

describe("routes, methods, keys", () => {
  test("unknown route: 404 with an error body", async () => {
    assertErrorBody(await request(server.httpUrl("/v1/embeddings"), { method: "POST", body: {} }), 404);
    assert.equal((await request(server.httpUrl("/nope"))).status, 404);
  });

  test("wrong method: 405", async () => {
    assertErrorBody(await request(server.httpUrl("/v1/chat/completions")), 405);
    assertErrorBody(await request(server.httpUrl("/v1/models"), { method: "POST", body: {} }), 405);
  });

  test("without --api-key any key, or none, is accepted", async () => {
    const other = server.client({ apiKey: "sk-some-other-key" });
    assert.equal((await other.models.retrieve("test")).id, "test");
    const none = await postChat(server, { model: "test", messages: userMessage("Hi?", dataUri(PNG.bytes)) });
    assert.equal(none.status, 200, none.text);
  });
});

describe("health and metrics", () => {
  test("/healthz, /readyz and /metrics on the HTTP port and on the metrics port", async () => {
    for (const url of [server.httpUrl.bind(server), server.metricsUrl.bind(server)]) {
      const health = await request(url("/healthz"));
      assert.equal(health.status, 200);
      assert.equal(health.text, "ok\n");
      assert.match(health.headers.get("content-type") ?? "", /^text\/plain/);
      const ready = await request(url("/readyz"));
      assert.equal(ready.status, 200);
      assert.equal(ready.text, "ready\n");
      const metrics = await request(url("/metrics"));
      assert.equal(metrics.status, 200);
      assert.match(metrics.headers.get("content-type") ?? "", /^text\/plain/);
      assert.match(metrics.text, /^# (HELP|TYPE) moondream_/m);
    }
  });

  test("requests over HTTP are counted with transport=\"http\" and the HTTP method names", async () => {
    const labels = (method, code = "OK") => ({ transport: "http", method, model: "test", code });
    const before = await scrape(server);
    await client.chat.completions.create({ model: "test", messages: userMessage("Hi?", dataUri(PNG.bytes)) });
    await collectStream(await client.chat.completions.create({
      model: "test", stream: true, messages: userMessage("Hi?", dataUri(PNG.bytes)),
    }));
    const after = await scrape(server, "http");
    for (const method of ["ChatCompletions", "StreamChatCompletions"]) {
      const was = Math.max(0, metricValue(before, "moondream_requests_total", labels(method)));
      assert.equal(metricValue(after, "moondream_requests_total", labels(method)), was + 1, method);
      assert.ok(metricValue(after, "moondream_request_duration_seconds_count", { transport: "http", method }) >= 1);
    }
    assert.ok(metricValue(after, "moondream_requests_total", { transport: "http", method: "ListModels" }) >= 1,
              "ListModels");
    assert.ok(metricValue(after, "moondream_requests_total", { transport: "http", method: "GetModel" }) >= 1,
              "GetModel");
    assert.ok(metricValue(after, "moondream_requests_total", { transport: "grpc" }) <= 0, "no gRPC requests were made");
  });

  test("the metrics port serves no /v1 routes", async () => {
    assert.equal((await request(server.metricsUrl("/v1/models"))).status, 404);
    const chat = await request(server.metricsUrl("/v1/chat/completions"), {
      method: "POST", body: { model: "test", messages: userMessage("Hi?", dataUri(PNG.bytes)) },
    });
    assert.equal(chat.status, 404);
  });
});

describe("transparency", () => {
  // Left half opaque red, right half fully transparent with blue stored under it.
  const W = 40;
  const H = 30;
  const pixel = (x) => (x < W / 2 ? [200, 30, 30, 255] : [0, 0, 255, 0]);
  const bytes = makePng(W, H, pixel, { alpha: true });
  const dropped = testModelAnswer({ width: W, height: H, mean: meanColour(W, H, pixel, "drop") }, { caption: "normal" });
  const flattened = testModelAnswer({ width: W, height: H, mean: meanColour(W, H, pixel, "flatten") }, { caption: "normal" });

  async function caption(target, flatten) {
    const body = { model: "test", messages: userMessage(undefined, dataUri(bytes)) };
    if (flatten !== undefined) body.flatten_transparency = flatten;
    const response = await postChat(target, body);
    assert.equal(response.status, 200, response.text);
    return response.json.choices[0].message.content;
  }

  test("flatten_transparency true composites onto white, false drops alpha, default = false", async () => {
    assert.match(dropped.text, /rgb\(100, 15, 142\)/);
    assert.match(flattened.text, /rgb\(227, 142, 142\)/);
    assert.equal(await caption(server, true), flattened.text);
    assert.equal(await caption(server, false), dropped.text);
    assert.equal(await caption(server, undefined), dropped.text);
    // and through the SDK (an extra body field)
    const completion = await client.chat.completions.create({
      model: "test", flatten_transparency: true, messages: userMessage(undefined, dataUri(bytes)),
    });
    assert.equal(completion.choices[0].message.content, flattened.text);
  });

  test("an opaque image is the same either way", async () => {
    const opaque = dataUri(PNG.bytes);
    for (const flatten_transparency of [true, false]) {
      const response = await postChat(server, { model: "test", flatten_transparency, messages: userMessage(undefined, opaque) });
      assert.equal(response.json.choices[0].message.content, testModelAnswer(PNG, { caption: "normal" }).text);
    }
  });

  test("--flatten-transparency makes flattening the default; false still overrides it", async () => {
    const flattening = await startTestServer(["--flatten-transparency"]);
    try {
      assert.equal(await caption(flattening, undefined), flattened.text);
      assert.equal(await caption(flattening, false), dropped.text);
      assert.equal(await caption(flattening, true), flattened.text);
    } finally {
      await flattening.stop();
    }
  });
});

describe("meme_search (ImageDescriptionProviders::OpenaiProvider) request shapes", () => {
  // Net::HTTP with these headers, body = {model, max_tokens, messages: [{role: user, content: [text, image_url]}]}.
  async function memeSearchPost(target, apiKey, model, maxTokens, prompt, url) {
    const endpoint = new URL("chat/completions", `${target.baseURL}/`);
    return request(endpoint.href, {
      method: "POST",
      headers: {
        "Accept-Encoding": "gzip;q=1.0,deflate;q=0.6,identity;q=0.3",
        Accept: "*/*",
        "User-Agent": "Ruby",
        Authorization: `Bearer ${apiKey}`,
        "Content-Type": "application/json",
      },
      body: JSON.stringify({
        model,
        max_tokens: maxTokens,
        messages: [{ role: "user", content: [{ type: "text", text: prompt }, { type: "image_url", image_url: { url } }] }],
      }),
    });
  }

  test("description of a real JPEG: the test model's answer", async () => {
    const response = await memeSearchPost(server, "sk-meme", "test", 160, MEME_SEARCH_PROMPT,
                                          dataUri(HUBBLE.bytes, "image/jpeg"));
    assert.equal(response.status, 200, response.text);
    const content = response.json?.choices?.[0]?.message?.content?.toString().trim();
    assert.ok(content, "content blank after strip");
    assert.equal(content, testModelAnswer(HUBBLE, { query: MEME_SEARCH_PROMPT }).text);
  });

  test("connection test (64x64 PNG, max_tokens 5)", async () => {
    const response = await memeSearchPost(server, "sk-meme", "test", 5, MEME_SEARCH_TEST_PROMPT,
                                          MEME_SEARCH_TEST_IMAGE_DATA_URL);
    assert.equal(response.status, 200, response.text);
    const content = response.json?.choices?.[0]?.message?.content?.toString().trim();
    assert.equal(content, "you asked “Reply with ok");
    assert.equal(response.json.choices[0].finish_reason, "length");
  });
});
