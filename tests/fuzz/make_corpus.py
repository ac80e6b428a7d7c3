#!/usr/bin/env python3
"""Writes the checked-in seed corpora of the fuzz targets, tests/fuzz/corpus/<target>/seed-*.

Inputs: tests/image/data (small format samples) and the moondream-tiny fixtures
(../shared/fixtures/moondream-tiny: a few tiny images, config.json). Run it again after changing
a seed; it rewrites only seed-* files, so regression inputs (crash-*, oom-*, timeout-*, the
reproducers of fixed bugs) stay. Python 3 standard library only.
"""
import base64
import json
import pathlib
import struct

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
FIXTURES = ROOT.parent / "shared" / "fixtures" / "moondream-tiny"
CORPUS = HERE / "corpus"


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / f"seed-{name}").write_bytes(data)


def clear(target):
    d = CORPUS / target
    if d.exists():
        for f in d.glob("seed-*"):
            f.unlink()


def image_seeds():
    clear("image_decode")
    data = ROOT / "tests" / "image" / "data"
    for f in sorted(data.iterdir()):
        if f.suffix in (".png", ".jpg", ".gif", ".webp"):
            write("image_decode", f.name, f.read_bytes())
    for rel in ("images/img4_64x48.png", "real/images/p2_meme_anim.gif",
                "real/images/p3_palette.png"):
        f = FIXTURES / rel
        write("image_decode", "fixture-" + f.name, f.read_bytes())


def openai_seeds():
    clear("openai_request")
    png = (ROOT / "tests" / "image" / "data" / "bilevel.png").read_bytes()
    uri = "data:image/png;base64," + base64.b64encode(png).decode()
    gif_uri = "data:application/octet-stream;base64," + base64.b64encode(b"GIF89a\x01\x00\x01\x00").decode()

    def part(url, nested=True):
        return {"type": "image_url", "image_url": {"url": url} if nested else url}

    def req(content, **extra):
        body = {"model": "moondream2", "messages": [{"role": "user", "content": content}]}
        body.update(extra)
        return json.dumps(body)

    write("openai_request", "query", req([{"type": "text", "text": "What is in this image?"}, part(uri)]))
    write("openai_request", "caption-default", req([part(uri)]))
    write("openai_request", "caption-short", req([part(uri)], caption="short"))
    write("openai_request", "stream-settings",
          req([part(uri, nested=False), {"type": "text", "text": " Describe it. "},
               {"type": "text", "text": "Briefly."}],
              stream=True, stream_options={"include_usage": True}, max_tokens=64,
              temperature=0.7, top_p=0.9, seed=12345678901, n=1, flatten_transparency=True))
    write("openai_request", "max-completion-tokens",
          req([part(gif_uri)], max_completion_tokens=1, max_tokens=None, caption="normal",
              stream=False))
    write("openai_request", "string-content", req("just text, no image"))
    write("openai_request", "two-images", req([part(uri), part(uri)]))
    write("openai_request", "system-turn", json.dumps({"messages": [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": [part(uri)]}]}))
    write("openai_request", "remote-url", req([part("https://example.com/cat.jpg")]))
    write("openai_request", "bad-base64", req([part("data:image/jpeg;base64,@@@")]))
    write("openai_request", "unicode", req([{"type": "text", "text": "¿Qué es esto? 这是什么 \U0001F600"}, part(uri)]))


def http_seeds():
    clear("http_request")
    seeds = {
        "get": "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "get-http10": "GET /?q=1 HTTP/1.0\r\n\r\n",
        "post-keepalive-pipelined":
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
            "Authorization: Bearer secret\r\nContent-Length: 13\r\n\r\n{\"a\": [1, 2]}"
            "GET /v1/models HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        "stream-chunked":
            "POST /stream HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\n",
        "expect-continue":
            "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\nbody",
        "throw": "DELETE /throw HTTP/1.1\r\nHost: a\r\n\r\n",
        "not-found-close": "GET /nowhere HTTP/1.1\r\nConnection: close\r\n\r\n",
        "body-too-large": "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\nxxxx",
        "headers-too-large": "GET / HTTP/1.1\r\nX-Pad: " + "p" * 1100 + "\r\n\r\n",
        "garbage": "BREW /pot HTCPCP/1.0\r\n\r\n",
        "truncated": "POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\nshort",
    }
    for name, data in seeds.items():
        write("http_request", name, data)


# GPT-2's byte -> unicode table (engine/tokenizer/bpe.cc ByteToUnicode).
def byte_to_unicode():
    out, n = {}, 256
    for b in range(256):
        if ord("!") <= b <= ord("~") or 0xA1 <= b <= 0xAC or b >= 0xAE:
            out[b] = chr(b)
        else:
            out[b] = chr(n)
            n += 1
    return out


def tokenizer_seeds():
    clear("tokenizer")
    texts = {
        "question": "What is the man in the red shirt holding?",
        "contractions": "It's what they've said: we'll see, I'd think, you're right, I'm sure.",
        "numbers": "In 2024, 3.14159 x 10^6 = 3141590 ... #42 @home $5",
        "whitespace": "a  b\t\tc\n\n  d    \r\n\u00a0e\u3000f        end   ",
        "unicode": "Café naïve résumé — 東京 🚀🙂 Ελληνικά русский عربى",
        "endoftext": "<|endoftext|>the end<|endoftext|>",
        "invalid-utf8": b"ok \xff\xfe bad \xc3( \xe2\x82 \xf0\x9f\x98 \xed\xa0\x80 end",
        "ids": bytes([0x00, 0x01, 0x61, 0x00, 0xFF, 0xFF, 0x10, 0xC4, 0x05, 0x00, 0xE3, 0x00]),
    }
    for name, text in texts.items():
        write("tokenizer", name, text)

    clear("tokenizer_json")
    b2u = byte_to_unicode()
    vocab = {b2u[b]: b for b in range(256)}
    merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a")]
    for a, b in merges:
        vocab.setdefault(a, len(vocab))
        vocab.setdefault(b, len(vocab))
        vocab.setdefault(a + b, len(vocab))
    base = {
        "version": "1.0",
        "added_tokens": [
            {"id": len(vocab), "content": "<|endoftext|>", "special": True},
            {"id": len(vocab) + 1, "content": "    ", "special": False},
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                          "use_regex": True},
        "model": {"type": "BPE", "vocab": vocab, "merges": [f"{a} {b}" for a, b in merges]},
    }
    write("tokenizer_json", "minimal", json.dumps(base, ensure_ascii=False))
    pairs = json.loads(json.dumps(base))
    pairs["model"]["merges"] = [[a, b] for a, b in merges]
    del pairs["added_tokens"]
    write("tokenizer_json", "merge-pairs", json.dumps(pairs, ensure_ascii=False))
    missing = json.loads(json.dumps(base))
    del missing["model"]["vocab"][b2u[ord("a")]]
    write("tokenizer_json", "missing-byte", json.dumps(missing, ensure_ascii=False))


def safetensors(header, data=b""):
    h = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(h)) + h + data


def safetensors_seeds():
    clear("safetensors_header")
    data = bytes(range(48))
    write("safetensors_header", "three-tensors", safetensors({
        "__metadata__": {"format": "pt"},
        "model.a": {"dtype": "F16", "shape": [2, 3], "data_offsets": [0, 12]},
        "model.b": {"dtype": "BF16", "shape": [6], "data_offsets": [12, 24]},
        "model.c": {"dtype": "F32", "shape": [3, 1, 2], "data_offsets": [24, 48]},
    }, data))
    write("safetensors_header", "scalar-and-empty", safetensors({
        "s": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]},
        "e": {"dtype": "F16", "shape": [0, 7], "data_offsets": [4, 4]},
    }, b"\x00\x00\x80\x3f"))
    write("safetensors_header", "empty-header", safetensors({}))
    write("safetensors_header", "overlap", safetensors({
        "x": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]},
        "y": {"dtype": "F16", "shape": [2], "data_offsets": [2, 6]},
    }, bytes(8)))
    write("safetensors_header", "bad-dtype", safetensors({
        "x": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}}, bytes(8)))


def config_seeds():
    clear("model_config")
    write("model_config", "fixture", (FIXTURES / "public-a" / "ckpt" / "config.json").read_bytes())
    write("model_config", "empty", "{}")
    write("model_config", "defaults", json.dumps({"config": {}}))
    write("model_config", "partial", json.dumps({"config": {
        "text": {"dim": 64, "n_heads": 4, "n_layers": 1},
        "vision": {"enc_dim": 32, "enc_n_heads": 2, "crop_size": 28, "enc_patch_size": 14,
                   "enc_n_layers": 1},
        "region": None,
        "tokenizer": {"bos_id": 1, "eos_id": 2, "templates": {"caption": {"short": [5, 6]},
                                                            "query": None}}}}))


def main():
    image_seeds()
    openai_seeds()
    http_seeds()
    tokenizer_seeds()
    safetensors_seeds()
    config_seeds()
    total = sum(f.stat().st_size for f in CORPUS.rglob("*") if f.is_file())
    print(f"make_corpus: {sum(1 for f in CORPUS.rglob('*') if f.is_file())} files, {total} bytes")


if __name__ == "__main__":
    main()
