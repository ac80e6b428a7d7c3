// --api-key: every /v1/* request needs `Authorization: Bearer KEY`; health and metrics never do.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { OpenAI, assertErrorBody, assertSdkError, collectStream } from "./assertions.mjs";
import { dataUri, solidPng, testModelAnswer, userMessage } from "./fixtures.mjs";
import { postChat, request, startTestServer } from "./server.mjs";

const KEY = "secret";
const PNG = { width: 32, height: 32, mean: [40, 70, 200], bytes: solidPng(32, 32, [40, 70, 200]) };
const params = { model: "test", messages: userMessage("Who goes there?", dataUri(PNG.bytes)) };

let server;
before(async () => {
  server = await startTestServer([`--api-key=${KEY}`]);
});
after(() => server?.stop());

describe("--api-key", () => {
  test("the right key works for completions, streams and models", async () => {
    const client = server.client({ apiKey: KEY });
    const completion = await client.chat.completions.create(params);
    assert.equal(completion.choices[0].message.content, testModelAnswer(PNG, { query: "Who goes there?" }).text);
    const { content } = await collectStream(await client.chat.completions.create({ ...params, stream: true }));
    assert.equal(content, completion.choices[0].message.content);
    assert.equal((await client.models.list()).data[0].id, "test");
    assert.equal((await client.models.retrieve("test")).id, "test");
  });

  test("a wrong key: AuthenticationError (401, invalid_api_key) on every /v1 route", async () => {
    const client = server.client({ apiKey: "not-the-secret" });
    const expect = { code: "invalid_api_key", type: "authentication_error" };
    await assertSdkError(client.chat.completions.create(params), OpenAI.AuthenticationError, 401, expect);
    await assertSdkError(client.chat.completions.create({ ...params, stream: true }), OpenAI.AuthenticationError, 401,
                         expect);
    await assertSdkError(client.models.list(), OpenAI.AuthenticationError, 401, expect);
    await assertSdkError(client.models.retrieve("test"), OpenAI.AuthenticationError, 401, expect);
    // a prefix or an extension of the key is not the key
    for (const apiKey of ["secre", "secret2", "SECRET"]) {
      await assertSdkError(server.client({ apiKey }).models.list(), OpenAI.AuthenticationError, 401);
    }
  });

  test("a missing or malformed Authorization header: 401 with an OpenAI error body", async () => {
    const expect = { type: "authentication_error", code: "invalid_api_key" };
    assertErrorBody(await postChat(server, params), 401, expect);
    assertErrorBody(await postChat(server, params, { Authorization: `Basic ${KEY}` }), 401, expect);
    assertErrorBody(await postChat(server, params, { Authorization: KEY }), 401, expect);
    assertErrorBody(await postChat(server, params, { Authorization: "Bearer " }), 401, expect);
    assertErrorBody(await request(server.httpUrl("/v1/models")), 401, expect);
    assertErrorBody(await request(server.httpUrl("/v1/models/test")), 401, expect);
    const ok = await postChat(server, params, { Authorization: `Bearer ${KEY}` });
    assert.equal(ok.status, 200, ok.text);
  });

  test("/healthz, /readyz and /metrics need no key", async () => {
    for (const path of ["/healthz", "/readyz", "/metrics"]) {
      assert.equal((await request(server.httpUrl(path))).status, 200, `${path} on the HTTP port`);
      assert.equal((await request(server.metricsUrl(path))).status, 200, `${path} on the metrics port`);
    }
  });
});
