// Assertions shared by the HTTP tests.
import assert from "node:assert/strict";
import OpenAI from "openai";

// An OpenAI error response: `status`, JSON `{"error":{"message","type","param":null,"code"}}`.
export function assertErrorBody(response, status, { type, code, message } = {}) {
  assert.equal(response.status, status, `expected HTTP ${status}, got ${response.status}: ${response.text}`);
  assert.match(response.headers.get("content-type") ?? "", /^application\/json/, "error content-type");
  const error = response.json?.error;
  assert.ok(error && typeof error === "object", `no "error" object in ${JSON.stringify(response.text)}`);
  assert.deepEqual(Object.keys(error).sort(), ["code", "message", "param", "type"], response.text);
  assert.equal(typeof error.message, "string");
  assert.ok(error.message.length > 0, "empty error message");
  assert.equal(typeof error.type, "string");
  assert.equal(error.param, null);
  if (type !== undefined) assert.equal(error.type, type, response.text);
  if (code !== undefined) assert.equal(error.code, code, response.text);
  if (message !== undefined) assert.match(error.message, message);
  return error;
}

// Awaits `promise`, which must reject with the SDK error class `ErrorClass` and `status`.
export async function assertSdkError(promise, ErrorClass, status, { code, type, message } = {}) {
  let error;
  try {
    const value = await promise;
    assert.fail(`expected ${ErrorClass.name} (${status}), got a result: ${JSON.stringify(value).slice(0, 300)}`);
  } catch (e) {
    error = e;
  }
  if (error instanceof assert.AssertionError) throw error;
  assert.ok(error instanceof ErrorClass, `expected ${ErrorClass.name}, got ${error?.constructor?.name}: ${error?.message}`);
  assert.equal(error.status, status, error.message);
  if (code !== undefined) assert.equal(error.code, code, error.message);
  if (type !== undefined) assert.equal(error.type, type, error.message);
  if (message !== undefined) assert.match(error.message, message);
  return error;
}

// A non-streamed chat completion as the spec shapes it.
export function assertCompletion(completion, { model, content, finishReason, promptTokens, completionTokens }) {
  assert.match(completion.id, /^chatcmpl-[0-9a-f]+$/, `id ${completion.id}`);
  assert.equal(completion.object, "chat.completion");
  assert.ok(Number.isInteger(completion.created), `created ${completion.created}`);
  assert.ok(Math.abs(completion.created - Date.now() / 1000) < 300, `created ${completion.created} is not now`);
  assert.equal(completion.model, model);
  assert.equal(completion.choices.length, 1);
  const [choice] = completion.choices;
  assert.equal(choice.index, 0);
  assert.equal(choice.message.role, "assistant");
  assert.equal(choice.logprobs, null);
  if (content !== undefined) assert.equal(choice.message.content, content);
  if (finishReason !== undefined) assert.equal(choice.finish_reason, finishReason);
  const { usage } = completion;
  assert.ok(usage, "no usage");
  if (promptTokens !== undefined) assert.equal(usage.prompt_tokens, promptTokens, "prompt_tokens");
  if (completionTokens !== undefined) assert.equal(usage.completion_tokens, completionTokens, "completion_tokens");
  assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens, "total_tokens");
}

// Collects an SDK stream: { chunks, content, roleChunk, finishReasons, usageChunks }.
export async function collectStream(stream) {
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  const content = chunks.flatMap((c) => c.choices.map((choice) => choice.delta?.content ?? "")).join("");
  return { chunks, content };
}

export { OpenAI };
