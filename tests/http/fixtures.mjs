// Images for the tests (PNGs generated here with exact pixels, files from the moondream-tiny
// fixtures) and what the weight-free `test` model answers for them (engine/test_model.cc).
import { readFileSync } from "node:fs";
import path from "node:path";
import { deflateSync } from "node:zlib";
import { FIXTURES_DIR } from "./server.mjs";

// ---- PNG encoder (8-bit RGB or RGBA, filter 0) ----

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(buffer) {
  let c = 0xffffffff;
  for (const byte of buffer) c = CRC_TABLE[(c ^ byte) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type, data) {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, "latin1"), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([length, body, crc]);
}

// A PNG of width x height whose pixel (x, y) is pixel(x, y) = [r, g, b] or [r, g, b, a]
// (alpha: true writes colour type 6, RGBA). `level`: zlib level (0 = stored, for big files).
export function makePng(width, height, pixel, { alpha = false, level = 6 } = {}) {
  const channels = alpha ? 4 : 3;
  const raw = Buffer.alloc((width * channels + 1) * height);
  let at = 0;
  for (let y = 0; y < height; y++) {
    raw[at++] = 0;  // filter: none
    for (let x = 0; x < width; x++) {
      const p = pixel(x, y);
      for (let c = 0; c < channels; c++) raw[at++] = c < 3 ? p[c] : (p[3] ?? 255);
    }
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, alpha ? 6 : 2, 0, 0, 0], 8);
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", ihdr),
    chunk("IDAT", deflateSync(raw, { level })),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

// A solid-colour RGB PNG.
export function solidPng(width, height, rgb) {
  return makePng(width, height, () => rgb);
}

export function dataUri(bytes, mime = "image/png") {
  return `data:${mime};base64,${Buffer.from(bytes).toString("base64")}`;
}

export function fixture(relativePath) {
  if (!FIXTURES_DIR) throw new Error("MOONDREAM_FIXTURES_DIR is not set (…/shared/fixtures/moondream-tiny)");
  return readFileSync(path.join(FIXTURES_DIR, relativePath));
}

// JPEG fixtures with their size and the integer mean RGB of their decoded pixels (Pillow 9.4 over
// libjpeg-turbo 2.1.5, the decode the engine reproduces exactly:
// np.asarray(Image.open(f).convert("RGB")).reshape(-1, 3).sum(0) // (W * H)).
export const JPEGS = {
  hubble: { file: "real/images/p0_hubble_1000x872.jpg", width: 1000, height: 872, mean: [18, 19, 19] },
  astronaut: { file: "real/images/p1_astronaut_prog_512x512.jpg", width: 512, height: 512, mean: [141, 105, 96] },
};

// meme_search's connection-test image (ImageDescriptionProviders::OpenaiProvider::TEST_IMAGE_DATA_URL):
// a 64x64 PNG, sent verbatim.
export const MEME_SEARCH_TEST_IMAGE_DATA_URL =
  "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAEAAAABACAIAAAAlC+aJAAAA+UlEQVR42u3aQQ7CIBCF4XcJz9K1R/DeXqdp0pUujYl0GBh5DC9hyeL/YqOVAftxTr0ggAACCCAANeB83mYCvHMtiw5g7I6QYFR6LwbGprczQFLvNoCn3mcAVb3DALb6WgMI66sM4Ky3G0BbbzQsABhYbzF0A2z3R1WWfX8TwJjyubrvLxuWB3zVXDbV7m8C2J/m6E+gYBAg/lvoT4BRvwYC0AKo6gsGPUICCCDAr1c0y4oFlA3uaAcm5HXal0IKcD/Z4YCF/tTzAnSwRQCY/mw0w+l0hvlAhglNhhlZhillhjlxhkl9krsSSW6r5LkvpCtnAgggwGqAFzX/iQwCblWQAAAAAElFTkSuQmCC";
export const MEME_SEARCH_PROMPT =
  "Describe this meme for semantic search. Include visible text, objects, people, setting, and the joke or sentiment. Keep it concise.";
export const MEME_SEARCH_TEST_PROMPT = "Reply with ok if you can inspect this image.";

// ---- the test model (engine/test_model.cc) ----

const COLOURS = [
  ["black", 0, 0, 0], ["white", 255, 255, 255], ["gray", 128, 128, 128],
  ["red", 200, 30, 30], ["green", 40, 160, 40], ["blue", 40, 70, 200],
  ["yellow", 240, 220, 40], ["teal", 0, 128, 128], ["magenta", 200, 40, 200],
  ["orange", 245, 140, 30], ["purple", 110, 50, 150], ["brown", 120, 75, 35],
  ["pink", 245, 170, 190], ["navy", 20, 30, 100], ["olive", 120, 120, 30],
];

export function colourName([r, g, b]) {
  let best = COLOURS[0][0];
  let bestDistance = -1;
  for (const [name, cr, cg, cb] of COLOURS) {
    const distance = (cr - r) ** 2 + (cg - g) ** 2 + (cb - b) ** 2;
    if (bestDistance < 0 || distance < bestDistance) [best, bestDistance] = [name, distance];
  }
  return best;
}

// Integer mean RGB of the pixels pixel(x, y) after the alpha treatment: "drop" (the
// reference: RGB as stored) or "flatten" (composited onto white; exact for alpha 0 or 255).
export function meanColour(width, height, pixel, transparency = "drop") {
  const sum = [0, 0, 0];
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const p = pixel(x, y);
      const a = (p[3] ?? 255) / 255;
      for (let c = 0; c < 3; c++) sum[c] += transparency === "flatten" ? Math.round(p[c] * a + 255 * (1 - a)) : p[c];
    }
  }
  return sum.map((s) => Math.floor(s / (width * height)));
}

const wordCount = (text) => text.split(" ").filter((w) => w).length;

// What the test model answers about an image of `width` x `height` with integer mean colour
// `mean`: { text, promptTokens (incl. the one image token), words (one per token) }.
export function testModelAnswer({ width, height, mean }, task) {
  const size = `${width}×${height}`;
  const colour = colourName(mean);
  let prompt;
  let text;
  if (task.query !== undefined) {
    prompt = `Question: ${task.query} Answer:`;
    text = `you asked “${task.query}” about a ${size} ${colour} image`;
  } else if (task.caption === "short") {
    prompt = "Short caption:";
    text = `a test image of ${size} pixels, mostly ${colour}`;
  } else {
    const shape = width > height ? "landscape" : width < height ? "portrait" : "square";
    prompt = "Long caption:";
    text = `a test image of ${size} pixels in ${shape} format, mostly ${colour} with a mean colour of ` +
           `rgb(${mean[0]}, ${mean[1]}, ${mean[2]}) 🎨`;
  }
  return { text, promptTokens: wordCount(prompt) + 1, words: text.split(" ") };
}

// The answer cut to `maxTokens` tokens (one word per token): { text, completionTokens, finishReason }.
export function truncated(answer, maxTokens) {
  const words = maxTokens > 0 ? answer.words.slice(0, maxTokens) : answer.words;
  return {
    text: words.join(" "),
    completionTokens: words.length,
    finishReason: words.length < answer.words.length ? "length" : "stop",
  };
}

// messages = one user message with a text part (unless text is undefined) and an image_url part
// (unless url is undefined).
export function userMessage(text, url) {
  const content = [];
  if (text !== undefined) content.push({ type: "text", text });
  if (url !== undefined) content.push({ type: "image_url", image_url: { url } });
  return [{ role: "user", content }];
}
