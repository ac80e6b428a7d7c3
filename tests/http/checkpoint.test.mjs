// meme_search's two requests on the real engine path: the tiny random-weight Moondream2
// checkpoint (public-a, HF layout) quantized to INT8 at load.
import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { assertCompletion, collectStream } from "./assertions.mjs";
import {
  JPEGS, MEME_SEARCH_PROMPT, MEME_SEARCH_TEST_IMAGE_DATA_URL, MEME_SEARCH_TEST_PROMPT, dataUri, fixture, userMessage,
} from "./fixtures.mjs";
import { FIXTURES_DIR, request, startServer } from "./server.mjs";

const MODEL = "moondream2-int8";
const HUBBLE_URL = dataUri(fixture(JPEGS.hubble.file), "image/jpeg");

let server;
before(async () => {
  server = await startServer(["--model=moondream2", `--model-dir=${path.join(FIXTURES_DIR, "public-a/ckpt")}`,
                              "--precision=int8"], { timeoutMs: 120_000 });
});
after(() => server?.stop());

// meme_search (ImageDescriptionProviders::OpenaiProvider) posts with Net::HTTP exactly this.
function memeSearchPost(maxTokens, prompt, url) {
  return request(new URL("chat/completions", `${server.baseURL}/`).href, {
    method: "POST",
    headers: {
      "Accept-Encoding": "gzip;q=1.0,deflate;q=0.6,identity;q=0.3",
      Accept: "*/*",
      "User-Agent": "Ruby",
      Authorization: "Bearer sk-meme-search",
      "Content-Type": "application/json",
    },
    body: JSON.stringify({
      model: MODEL,
      max_tokens: maxTokens,
      messages: [{ role: "user", content: [{ type: "text", text: prompt }, { type: "image_url", image_url: { url } }] }],
    }),
  });
}

describe("tiny Moondream2 checkpoint (public-a, int8)", () => {
  test("models.list names the int8 variant", async () => {
    const page = await server.client().models.list();
    assert.deepEqual(page.data.map((m) => m.id), [MODEL]);
  });

  test("meme_search description of a real 1000x872 JPEG: non-blank content", async () => {
    const response = await memeSearchPost(160, MEME_SEARCH_PROMPT, HUBBLE_URL);
    assert.equal(response.status, 200, response.text);
    const content = response.json?.choices?.[0]?.message?.content?.toString().trim();
    assert.ok(content, `blank description: ${response.text}`);
    assertCompletion(response.json, { model: MODEL });
    assert.ok(["stop", "length"].includes(response.json.choices[0].finish_reason));
    assert.ok(response.json.usage.completion_tokens >= 1 && response.json.usage.completion_tokens <= 160);
    assert.ok(response.json.usage.prompt_tokens > 729, `prompt_tokens ${response.json.usage.prompt_tokens} lacks the image`);
  });

  test("meme_search connection test (64x64 PNG, max_tokens 5): non-blank content", async () => {
    const response = await memeSearchPost(5, MEME_SEARCH_TEST_PROMPT, MEME_SEARCH_TEST_IMAGE_DATA_URL);
    assert.equal(response.status, 200, response.text);
    const content = response.json?.choices?.[0]?.message?.content?.toString().trim();
    assert.ok(content, `blank answer: ${response.text}`);
    assert.ok(response.json.usage.completion_tokens <= 5);
  });

  test("streamed (SDK) and non-streamed answers are the same text (greedy)", async () => {
    const client = server.client();
    const params = { model: MODEL, max_tokens: 40, messages: userMessage(MEME_SEARCH_PROMPT, HUBBLE_URL) };
    const full = await client.chat.completions.create(params);
    const { chunks, content } = await collectStream(await client.chat.completions.create({
      ...params, stream: true, stream_options: { include_usage: true },
    }));
    assert.equal(content, full.choices[0].message.content);
    assert.deepEqual(chunks.at(-1).usage, full.usage);
  });

  // Byte-level BPE tokens need not end on a UTF-8 boundary; on public-a int8 this caption holds a
  // lone byte (shown as U+FFFD). Both bodies must be valid UTF-8 and tell the same text.
  test("raw bytes: streamed and non-streamed caption bodies are valid UTF-8 and agree", async () => {
    const body = {
      model: MODEL, max_tokens: 60, caption: "normal",
      messages: userMessage(undefined, dataUri(fixture("real/images/p3_palette.png"))),
    };
    const utf8 = new TextDecoder("utf-8", { fatal: true });
    const post = (extra) => fetch(server.httpUrl("/v1/chat/completions"), {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ ...body, ...extra }),
    });
    const full = JSON.parse(utf8.decode(await (await post({})).arrayBuffer()));
    const events = utf8.decode(await (await post({ stream: true })).arrayBuffer()).split("\n\n");
    assert.equal(events.at(-2), "data: [DONE]");
    const chunks = events.slice(0, -2).map((e) => JSON.parse(e.slice("data: ".length)));
    const text = full.choices[0].message.content;
    assert.equal(chunks.map((c) => c.choices[0]?.delta?.content ?? "").join(""), text);
    assert.ok(text.trim().length > 0);
  });
});
