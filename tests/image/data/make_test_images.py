#!/usr/bin/python3
"""Generates the small decode test inputs in this folder and expected.json.

Run with Debian's Python (PIL 9.4 over libjpeg-turbo 2.1.5, the reference's decoder):
    /usr/bin/python3 tests/image/data/make_test_images.py
Needs `cwebp` (Debian package `webp`). The expectation for every file is the sha256 of
Pillow's `Image.open(f).convert("RGB")` pixels (H×W×3 uint8, C order), i.e. spec §3.1.
"""
import hashlib
import json
import os
import struct
import subprocess
import zlib

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
W, H = 23, 17  # odd sizes exercise chroma subsampling edges


def rgb_array(seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:H, 0:W]
    base = np.stack([x * 11, y * 15, (x + y) * 6], -1)
    return ((base + rng.integers(0, 40, (H, W, 3))) % 256).astype(np.uint8)


def png16(path, arr, color_type):
    """Writes a 16-bit PNG by hand (Pillow cannot write 16-bit RGB)."""
    h, w = arr.shape[:2]
    raw = b"".join(b"\x00" + arr[r].astype(">u2").tobytes() for r in range(h))

    def chunk(tag, data):
        return (struct.pack(">I", len(data)) + tag + data +
                struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
                chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def main():
    rgb = Image.fromarray(rgb_array(1))
    alpha = Image.fromarray((np.arange(H * W).reshape(H, W) * 7 % 256).astype(np.uint8))
    rgba = rgb.copy()
    rgba.putalpha(alpha)  # includes alpha 0 and 255: must be dropped, not composited
    gray = rgb.convert("L")
    pal = rgb.quantize(colors=16)
    pal_t = pal.copy()
    pal_t.info["transparency"] = 3
    u16 = rgb_array(2).astype(np.uint16) * 257 + np.arange(W, dtype=np.uint16)[:, None] * 3
    out = {}

    def save(name, image, **kw):
        image.save(os.path.join(HERE, name), **kw)

    save("rgb.png", rgb)
    save("rgba.png", rgba)
    save("gray.png", gray)
    save("gray_alpha.png", Image.merge("LA", [gray, alpha]))
    save("bilevel.png", gray.point(lambda v: 255 if v > 100 else 0).convert("1"))
    save("palette.png", pal)
    save("palette_trns.png", pal_t, transparency=3)
    # grey 16-bit: Pillow clips to 255 (mode "I"), so keep values around that edge
    png16(os.path.join(HERE, "gray16.png"), rgb_array(4)[..., 0].astype(np.uint16) * 3, 0)
    png16(os.path.join(HERE, "rgb16.png"), u16, 2)
    png16(os.path.join(HERE, "rgba16.png"), np.dstack([u16, u16[..., :1] // 2]), 6)
    png16(os.path.join(HERE, "gray_alpha16.png"), np.dstack([u16[..., 1], u16[..., 2]]), 4)
    save("baseline_420.jpg", rgb, quality=90)
    save("baseline_444.jpg", rgb, quality=95, subsampling=0)
    save("progressive.jpg", rgb, quality=85, progressive=True)
    save("gray.jpg", gray, quality=90)
    save("cmyk.jpg", rgb.convert("CMYK"), quality=90)
    with open(os.path.join(HERE, "baseline_420.jpg"), "rb") as f:
        jpeg = f.read()
    with open(os.path.join(HERE, "extraneous_bytes.jpg"), "wb") as f:
        # libjpeg warns "extraneous bytes before marker"; Pillow decodes it anyway
        f.write(jpeg[:-2] + b"\x00\x00\x00" + jpeg[-2:])
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90": must be ignored
    save("exif_rotate.jpg", rgb, quality=90, exif=exif.tobytes())
    subprocess.run(["cwebp", "-quiet", "-q", "80", os.path.join(HERE, "rgb.png"), "-o",
                    os.path.join(HERE, "lossy.webp")], check=True)
    subprocess.run(["cwebp", "-quiet", "-lossless", os.path.join(HERE, "rgb.png"), "-o",
                    os.path.join(HERE, "lossless.webp")], check=True)
    save("alpha.webp", rgba, quality=80, exact=True)
    save("still.gif", pal)
    save("trns.gif", pal_t, transparency=3)  # transparent index: Pillow keeps its colour
    for name in ("still", "trns"):  # logical screen larger than the first frame
        with open(os.path.join(HERE, name + ".gif"), "rb") as f:
            gif = bytearray(f.read())
        gif[6:10] = struct.pack("<HH", W + 5, H + 3)
        with open(os.path.join(HERE, name + "_small_frame.gif"), "wb") as f:
            f.write(gif)
    frame2 = Image.fromarray(rgb_array(3)).quantize(colors=16)
    save("anim.gif", pal, save_all=True, append_images=[frame2], duration=100, loop=0)

    for name in sorted(os.listdir(HERE)):
        if name.endswith((".py", ".json")):
            continue
        pixels = np.asarray(Image.open(os.path.join(HERE, name)).convert("RGB"))
        out[name] = {"width": pixels.shape[1], "height": pixels.shape[0],
                     "rgb_sha256": hashlib.sha256(pixels.tobytes()).hexdigest()}
    with open(os.path.join(HERE, "expected.json"), "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
