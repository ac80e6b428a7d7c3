#!/usr/bin/python3
"""PyTorch-eager Moondream2 (HF 2025-01-09) baseline, written from the spec for benchmarks.

Runs caption on one image and prints one JSON object with the same timing keys as
`moondream-cli --json` (image_decode_ms, vision_encode_ms, prefill_ms, decode_ms, total_ms,
token_ids) plus n_crops, load_ms, peak_rss_bytes and a finer stage breakdown.

  pytorch_eager.py --model-dir DIR --image IMG [--precision fp32|bf16] [--threads T]
                   [--length normal|short] [--max-tokens N]

Straightforward eager code in the spirit of upstream `moondream/torch/` (spec sections 1-6):
weights F16 on disk -> compute dtype fp32 or bf16 (tensor by tensor), preallocated
max_context KV cache, greedy argmax, the reference's extra decode step after the last allowed
token. Attention scores and softmax run in fp32 (spec section 9.3); torch 1.13 has no SDPA.
Image: Pillow decode + convert("RGB"); resize with pyvips if importable, else libvips through
ctypes (the same libvips `resize` call), else Pillow LANCZOS (approximation; timing only).
Uses Debian's /usr/bin/python3 with python3-torch (1.13), python3-numpy, python3-pil.
No region head (caption only). Stage mapping:
  image_decode_ms   file decode + RGB + tiling/resize/crops + normalisation
  vision_encode_ms  ViT over all crops + stitching/pooling + projection (projection_ms inside)
  prefill_ms        image prefill (BOS + 729, prefix mask; image_prefill_ms) + prompt prefill
                    (prompt_prefill_ms)
  decode_ms         step-0 logits + every decode step (decode_steps of them)
"""
import argparse
import ctypes
import hashlib
import json
import math
import os
import resource
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

DEFAULTS = {  # spec section 1 (2B defaults; the release's config object is empty)
    "text": {"dim": 2048, "n_layers": 24, "vocab_size": 51200, "max_context": 2048,
             "n_heads": 32, "prefix_attn": 730},
    "vision": {"enc_dim": 1152, "enc_patch_size": 14, "enc_n_layers": 27, "enc_ff_dim": 4304,
               "enc_n_heads": 16, "proj_out_dim": 2048, "crop_size": 378, "in_channels": 3,
               "max_crops": 12, "overlap_margin": 4, "proj_inner_dim": 8192},
    "tokenizer": {"bos_id": 50256, "eos_id": 50256,
                  "templates": {"caption": {"short": [198, 198, 16438, 8305, 25],
                                            "normal": [198, 198, 24334, 1159, 25]}}},
}
ST_DTYPES = {"F16": (np.int16, torch.float16), "BF16": (np.int16, torch.bfloat16),
             "F32": (np.float32, torch.float32)}
COMPUTE = {"fp32": torch.float32, "bf16": torch.bfloat16}
LN_EPS = 1e-5
ROPE_THETA = 10000.0


def ms_since(t0):
    return (time.perf_counter() - t0) * 1000.0


# ---------------------------------------------------------------- checkpoint (spec section 2)
def load_config(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        given = json.load(f).get("config", {}) or {}
    cfg = {k: dict(v) for k, v in DEFAULTS.items()}
    for section in ("text", "vision", "tokenizer"):
        cfg[section].update(given.get(section, {}))
    return cfg


def load_weights(path, dtype):
    """Own safetensors reader (json header; F16/BF16/F32), converted to dtype tensor by tensor.

    Reads each tensor with a plain file read instead of keeping a memmap: mapped file pages count
    in ru_maxrss and would add ~3.9 GB of the F16 file to the baseline's peak RSS."""
    weights = {}
    with open(path, "rb") as f:
        (header_len,) = np.frombuffer(f.read(8), dtype="<u8")
        header = json.loads(f.read(int(header_len)))
        base = 8 + int(header_len)
        for name, info in header.items():
            if name == "__metadata__":
                continue
            np_dtype, st_dtype = ST_DTYPES[info["dtype"]]
            begin, end = info["data_offsets"]
            f.seek(base + begin)
            raw = np.fromfile(f, dtype=np_dtype, count=(end - begin) // np.dtype(np_dtype).itemsize)
            tensor = torch.from_numpy(raw.reshape(info["shape"])).view(st_dtype)
            weights[name[len("model."):]] = tensor.to(dtype)
    return weights


# ---------------------------------------------------------------- image (spec section 3)
class LibvipsCtypes:
    """The libvips C API through ctypes: new_from_memory -> resize(h, vscale=v) -> memory."""

    def __init__(self):
        self.lib = ctypes.CDLL("libvips.so.42")
        self.gobject = ctypes.CDLL("libgobject-2.0.so.0")
        self.glib = ctypes.CDLL("libglib-2.0.so.0")
        if self.lib.vips_init(b"pytorch_eager") != 0:
            raise RuntimeError("vips_init failed")
        self.lib.vips_image_new_from_memory.restype = ctypes.c_void_p
        self.lib.vips_image_new_from_memory.argtypes = ([ctypes.c_void_p, ctypes.c_size_t]
                                                        + [ctypes.c_int] * 4)
        self.lib.vips_image_write_to_memory.restype = ctypes.c_void_p
        self.lib.vips_image_write_to_memory.argtypes = [ctypes.c_void_p,
                                                        ctypes.POINTER(ctypes.c_size_t)]
        for fn in ("vips_image_get_width", "vips_image_get_height", "vips_image_get_bands"):
            getattr(self.lib, fn).argtypes = [ctypes.c_void_p]
        self.gobject.g_object_unref.argtypes = [ctypes.c_void_p]
        self.glib.g_free.argtypes = [ctypes.c_void_p]

    def resize(self, rgb, width, height):
        h, w, bands = rgb.shape
        src = np.ascontiguousarray(rgb)
        image = self.lib.vips_image_new_from_memory(src.ctypes.data, src.nbytes, w, h, bands, 0)
        out = ctypes.c_void_p()
        # varargs after the scale: option name/value pairs, NULL-terminated
        rc = self.lib.vips_resize(ctypes.c_void_p(image), ctypes.byref(out),
                                  ctypes.c_double(width / w),
                                  b"vscale", ctypes.c_double(height / h), None)
        self.gobject.g_object_unref(image)
        if rc != 0:
            raise RuntimeError("vips_resize failed")
        size = ctypes.c_size_t()
        buf = self.lib.vips_image_write_to_memory(out, ctypes.byref(size))
        shape = (self.lib.vips_image_get_height(out), self.lib.vips_image_get_width(out),
                 self.lib.vips_image_get_bands(out))
        result = np.frombuffer(ctypes.string_at(buf, size.value), dtype=np.uint8).reshape(shape)
        self.glib.g_free(buf)
        self.gobject.g_object_unref(out)
        return result


def make_resizer():
    """(name, fn(rgb uint8 HxWx3, width, height) -> uint8 array)."""
    try:
        import pyvips  # noqa: F401  (not packaged in Debian 12)

        def vips(rgb, width, height):
            img = pyvips.Image.new_from_array(rgb)
            out = img.resize(width / rgb.shape[1], vscale=height / rgb.shape[0])
            return np.ndarray(buffer=out.write_to_memory(), dtype=np.uint8,
                              shape=[out.height, out.width, out.bands])
        return "pyvips", vips
    except ImportError:
        pass
    try:
        return "libvips-ctypes", LibvipsCtypes().resize
    except (OSError, RuntimeError):
        return "pil-lanczos", lambda rgb, w, h: np.asarray(
            Image.fromarray(rgb).resize((w, h), Image.LANCZOS))


def select_tiling(h, w, c, max_crops):
    """Spec section 3.2; returns (rows, cols)."""
    if h <= c or w <= c:
        return 1, 1
    min_h, min_w = math.ceil(h / c), math.ceil(w / c)
    if min_h * min_w > max_crops:
        r = math.sqrt(max_crops / (min_h * min_w))
        return max(1, math.floor(min_h * r)), max(1, math.floor(min_w * r))
    rows = max(math.floor(math.sqrt(max_crops * h / w)), min_h)
    cols = max(math.floor(math.sqrt(max_crops * w / h)), min_w)
    if rows * cols > max_crops:
        if cols > rows:
            cols = math.floor(max_crops / rows)
        else:
            rows = math.floor(max_crops / cols)
    return max(1, rows), max(1, cols)


def overlap_crops(rgb, vcfg, resize):
    """Spec section 3.3 -> (uint8 crops [N, crop, crop, 3], (rows, cols)); crop 0 is global."""
    crop, patch = vcfg["crop_size"], vcfg["enc_patch_size"]
    margin = vcfg["overlap_margin"] * patch
    window = crop - 2 * margin
    H, W = rgb.shape[:2]
    rows, cols = select_tiling(H - 2 * margin, W - 2 * margin, window, vcfg["max_crops"])
    canvas = resize(rgb, cols * window + 2 * margin, rows * window + 2 * margin)
    crops = np.zeros((rows * cols + 1, crop, crop, 3), dtype=np.uint8)
    crops[0] = resize(rgb, crop, crop)
    for i in range(rows):
        for j in range(cols):
            tile = canvas[i * window:i * window + crop, j * window:j * window + crop]
            crops[1 + i * cols + j, :tile.shape[0], :tile.shape[1]] = tile
    return crops, (rows, cols)


def preprocess(path, vcfg, resize, dtype):
    """File -> (normalised crops [N, 3, crop, crop] in dtype, uint8 crops, tiling)."""
    with Image.open(path) as img:
        rgb = np.asarray(img.convert("RGB"))
    crops, tiling = overlap_crops(rgb, vcfg, resize)
    pixels = torch.from_numpy(crops).permute(0, 3, 1, 2).float()
    pixels = ((pixels / 255.0 - 0.5) / 0.5).to(dtype)
    return pixels, crops, tiling


# ---------------------------------------------------------------- vision (spec section 4)
def layer_norm(x, w, prefix):
    return F.layer_norm(x, (x.shape[-1],), w[prefix + ".weight"], w[prefix + ".bias"], LN_EPS)


def linear(x, w, prefix):
    return F.linear(x, w[prefix + ".weight"], w[prefix + ".bias"])


def mlp(x, w, prefix):
    return linear(F.gelu(linear(x, w, prefix + ".fc1"), approximate="tanh"), w, prefix + ".fc2")


def attention(q, k, v, mask):
    """q [H, T, hd], k/v [H, S, hd], mask [T, S] bool or None -> [T, H*hd]; fp32 softmax."""
    scores = torch.matmul(q, k.transpose(-1, -2)).float() / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    out = torch.matmul(scores.softmax(-1).to(v.dtype), v)
    return out.transpose(0, 1).reshape(q.shape[1], -1)


def vision_block(x, w, p, n_heads):
    """x [N, 729, enc] -> same; pre-LN ViT block (spec 4.2)."""
    n, t, d = x.shape
    qkv = linear(layer_norm(x, w, p + ".ln1"), w, p + ".attn.qkv")
    q, k, v = qkv.view(n, t, 3, n_heads, d // n_heads).permute(2, 0, 3, 1, 4)
    outs = [attention(q[i], k[i], v[i], None) for i in range(n)]
    x = x + linear(torch.stack(outs), w, p + ".attn.proj")
    return x + mlp(layer_norm(x, w, p + ".ln2"), w, p + ".mlp")


def vision_encoder(pixels, w, vcfg):
    """[N, 3, crop, crop] -> [N, grid^2, enc] (spec 4.1-4.2)."""
    n, c, size, _ = pixels.shape
    p, g = vcfg["enc_patch_size"], size // vcfg["enc_patch_size"]
    patches = pixels.view(n, c, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(n, g * g, c * p * p)
    x = linear(patches, w, "vision.patch_emb") + w["vision.pos_emb"]
    for i in range(vcfg["enc_n_layers"]):
        x = vision_block(x, w, "vision.blocks.%d" % i, vcfg["enc_n_heads"])
    return layer_norm(x, w, "vision.post_ln")


def stitch_and_pool(local, tiling, vcfg, grid):
    """local [rows*cols, grid^2, enc] -> pooled [grid^2, enc] (spec 4.3)."""
    rows, cols = tiling
    m = vcfg["overlap_margin"]
    keep = grid - 2 * m
    tiles = local.view(rows, cols, grid, grid, -1)
    canvas = local.new_zeros(keep * rows + 2 * m, keep * cols + 2 * m, local.shape[-1])
    for i in range(rows):
        for j in range(cols):
            y0, y1 = (0 if i == 0 else m), (grid if i == rows - 1 else grid - m)
            x0, x1 = (0 if j == 0 else m), (grid if j == cols - 1 else grid - m)
            dst_y, dst_x = keep * i, keep * j
            canvas[dst_y + y0:dst_y + y1, dst_x + x0:dst_x + x1] = tiles[i, j, y0:y1, x0:x1]
    pooled = F.adaptive_avg_pool2d(canvas.permute(2, 0, 1).float(), (grid, grid))
    return pooled.permute(1, 2, 0).reshape(grid * grid, -1).to(local.dtype)


# ---------------------------------------------------------------- text (spec section 5)
def rope_tables(tcfg):
    rot = tcfg["dim"] // (2 * tcfg["n_heads"])  # rotated dims per head (32)
    freqs = 1.0 / ROPE_THETA ** (torch.arange(0, rot, 2, dtype=torch.float32) / rot)
    angles = torch.arange(tcfg["max_context"], dtype=torch.float32)[:, None] * freqs[None, :]
    return torch.cos(angles), torch.sin(angles)


def apply_rope(x, cos, sin):
    """x [H, T, hd]; half-split pairs (j, j+rot/2) on the first rot dims, fp32 math."""
    half = cos.shape[-1]
    a, b = x[..., :half].float(), x[..., half:2 * half].float()
    rotated = torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1).to(x.dtype)
    return torch.cat([rotated, x[..., 2 * half:]], dim=-1)


def prefix_mask(tcfg):
    ctx, prefix = tcfg["max_context"], tcfg["prefix_attn"]
    mask = torch.ones(ctx, ctx, dtype=torch.bool).tril()
    mask[:prefix, :prefix] = True
    return mask


class TextModel:
    def __init__(self, w, tcfg, dtype):
        self.w, self.cfg = w, tcfg
        self.cos, self.sin = rope_tables(tcfg)
        self.mask = prefix_mask(tcfg)
        heads, hd = tcfg["n_heads"], tcfg["dim"] // tcfg["n_heads"]
        shape = (tcfg["n_layers"], 2, heads, tcfg["max_context"], hd)
        self.kv = torch.zeros(shape, dtype=dtype)  # reference: preallocated, zero-initialised

    def block(self, x, layer, pos):
        """x [T, D] at positions pos..pos+T-1 -> [T, D]; parallel attention + MLP (spec 5.1)."""
        w, p = self.w, "text.blocks.%d" % layer
        t, d = x.shape
        heads = self.cfg["n_heads"]
        u = layer_norm(x, w, p + ".ln")
        q, k, v = linear(u, w, p + ".attn.qkv").view(t, 3, heads, d // heads).permute(1, 2, 0, 3)
        cos, sin = self.cos[pos:pos + t], self.sin[pos:pos + t]
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        self.kv[layer, 0, :, pos:pos + t] = k
        self.kv[layer, 1, :, pos:pos + t] = v
        end = pos + t
        attn = attention(q, self.kv[layer, 0, :, :end], self.kv[layer, 1, :, :end],
                         self.mask[pos:end, :end])
        return x + linear(attn, w, p + ".attn.proj") + mlp(u, w, p + ".mlp")

    def forward(self, x, pos):
        for layer in range(self.cfg["n_layers"]):
            x = self.block(x, layer, pos)
        return x

    def embed(self, ids):
        return F.embedding(torch.tensor(ids, dtype=torch.long), self.w["text.wte"])

    def logits(self, h_last):
        return linear(layer_norm(h_last, self.w, "text.post_ln"), self.w, "text.lm_head").float()


# ---------------------------------------------------------------- pipeline (spec section 6)
def encode_image(pixels, tiling, w, cfg, text, times):
    """Vision + projection + image prefill; returns the next position (730)."""
    vcfg = cfg["vision"]
    t0 = time.perf_counter()
    out = vision_encoder(pixels, w, vcfg)
    grid = vcfg["crop_size"] // vcfg["enc_patch_size"]
    t1 = time.perf_counter()
    features = torch.cat([out[0], stitch_and_pool(out[1:], tiling, vcfg, grid)], dim=-1)
    embeds = mlp(features, w, "vision.proj_mlp")
    times["projection_ms"] = ms_since(t1)
    times["vision_encode_ms"] = ms_since(t0)
    t2 = time.perf_counter()
    seq = torch.cat([text.embed([cfg["tokenizer"]["bos_id"]]), embeds], dim=0)
    text.forward(seq, 0)
    times["image_prefill_ms"] = ms_since(t2)
    return seq.shape[0]


def generate(text, prompt, pos, max_tokens, eos, times):
    """Spec 6.2 greedy loop; returns (token_ids, decode_steps)."""
    t0 = time.perf_counter()
    h = text.forward(text.embed(prompt), pos)
    pos += len(prompt)
    times["prompt_prefill_ms"] = ms_since(t0)
    t1 = time.perf_counter()
    token, tokens, steps = int(text.logits(h[-1]).argmax()), [], 0
    while token != eos and len(tokens) < max_tokens:
        tokens.append(token)
        h = text.forward(text.embed([token]), pos)
        pos, steps = pos + 1, steps + 1
        token = int(text.logits(h[-1]).argmax())
    times["decode_ms"] = ms_since(t1)
    return tokens, steps


def run(args):
    torch.set_num_threads(args.threads)
    dtype = COMPUTE[args.precision]
    resize_name, resize = make_resizer()
    t_load = time.perf_counter()
    cfg = load_config(args.model_dir)
    w = load_weights(os.path.join(args.model_dir, "model.safetensors"), dtype)
    text = TextModel(w, cfg["text"], dtype)
    load_ms = ms_since(t_load)
    times = {}
    with torch.inference_mode():
        t0 = time.perf_counter()
        pixels, crops, tiling = preprocess(args.image, cfg["vision"], resize, dtype)
        times["image_decode_ms"] = ms_since(t0)
        pos = encode_image(pixels, tiling, w, cfg, text, times)
        prompt = cfg["tokenizer"]["templates"]["caption"][args.length]
        eos = cfg["tokenizer"]["eos_id"]
        tokens, steps = generate(text, prompt, pos, args.max_tokens, eos, times)
        times["total_ms"] = ms_since(t0)
    times["prefill_ms"] = times["image_prefill_ms"] + times["prompt_prefill_ms"]
    return dict(times, token_ids=tokens, decode_steps=steps, n_crops=int(pixels.shape[0]),
                tiling=list(tiling), prompt_tokens=len(prompt), load_ms=load_ms,
                precision=args.precision, threads=args.threads, resize=resize_name,
                torch_version=torch.__version__,
                crops_sha256=hashlib.sha256(np.ascontiguousarray(crops).tobytes()).hexdigest(),
                peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-dir", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--precision", choices=sorted(COMPUTE), default="fp32")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--length", choices=["normal", "short"], default="normal")
    p.add_argument("--max-tokens", type=int, default=32)
    print(json.dumps(run(p.parse_args())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
