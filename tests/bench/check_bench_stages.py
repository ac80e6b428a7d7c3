"""Checks bench_stages' JSON and summary (called by bench_stages_smoke.sh).

  check_bench_stages.py OUT_DIR CONFIG_JSON CROPS_PNG

OUT_DIR holds all.json/all.txt (fp32,bf16,int8, every stage, --repeats 1 --decode-steps 3) and
decode.json/decode.txt (int8, --stages decode, --repeats 2 --decode-steps 2). Exits non-zero
with the failed assertion on any mismatch.
"""
import json
import math
import pathlib
import statistics
import struct
import sys

out, config_path, crops_png = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
cfg = json.load(open(config_path))["config"]
text = cfg["text"]
d, layers, vocab, heads = text["dim"], text["n_layers"], text["vocab_size"], text["n_heads"]
prompt_len = len(cfg["tokenizer"]["templates"]["caption"]["normal"])
# Upstream crop stack: n crops of 378x378 stacked vertically.
with open(crops_png, "rb") as f:
    _, png_h = struct.unpack(">II", f.read(24)[16:24])
crops = png_h // 378


def close(a, b, rel=1e-6):
    assert a is not None and b is not None, (a, b)
    assert math.isclose(a, b, rel_tol=rel, abs_tol=1e-12), (a, b)


def lookup(doc, path):
    for part in path.split("."):
        doc = doc[part]
    return doc


def check_stat(s, repeats):
    assert len(s["samples"]) == repeats, s
    assert all(v > 0 for v in s["samples"]), s
    close(s["median"], statistics.median(s["samples"]))
    close(s["min"], min(s["samples"]))


def check_common(doc, precisions, stages, repeats, steps):
    assert doc["precisions"] == precisions, doc["precisions"]
    assert doc["stages"] == stages, doc["stages"]
    assert doc["repeats"] == repeats and doc["decode_steps"] == steps
    assert doc["crops"] == crops, (doc["crops"], crops)
    assert doc["threads"] >= 1 and "--json" in doc["command"]
    m = doc["machine"]
    assert m["read_bandwidth_gbs"] == max(m["read_bandwidth_start_gbs"], m["read_bandwidth_end_gbs"]) > 0
    # INT8 bytes per decode token: text linears + lm_head (packed int8 + per-row fp32 scale,
    # bias and maybe row sums; the tiny shapes need no padding).
    b = doc["int8_decode_bytes"]
    linears = layers * (3 * d * d + d * d + 4 * d * d + 4 * d * d)
    rows = layers * (3 * d + d + 4 * d + d)
    assert linears + 8 * rows <= b["text_linears"] <= linears + 16 * rows, b
    assert vocab * d + 8 * vocab <= b["lm_head"] <= vocab * d + 16 * vocab, b
    assert b["weights_per_token"] == b["text_linears"] + b["lm_head"], b
    ctx = 730 + prompt_len + (steps + 1) / 2
    close(b["kv_context"], ctx)
    assert b["kv_cache_dtype"] == "Char", b["kv_cache_dtype"]  # int8 rows + an fp32 scale each
    close(b["kv_cache_per_token"], 2 * layers * (d + 4 * heads) * ctx, rel=1e-9)
    res = doc["results"]
    assert list(res) == precisions, list(res)
    for p, r in res.items():
        assert r["load_s"] > 0 and r["rss_after_load_mb"] > 0 and r["parameters"] > 0, p
        assert r["random_embeds"] == ("vision" not in stages), p
        keys = {"vision": ["vision_ms", "vision_ms_per_crop", "vision_cpu_ms", "vision_cpu_ms_per_crop"],
                "prefill": ["image_prefill_ms", "image_prefill_cpu_ms"],
                "decode": ["decode_ms_per_token", "decode_cpu_ms_per_token"]}
        for stage, names in keys.items():
            for k in names:
                assert (k in r) == (stage in stages), (p, k)
                if k in r:
                    check_stat(r[k], repeats)
        if "vision" in stages:
            for total, per_crop in (("vision_ms", "vision_ms_per_crop"), ("vision_cpu_ms", "vision_cpu_ms_per_crop")):
                for a, b_ in zip(r[total]["samples"], r[per_crop]["samples"], strict=True):
                    close(b_, a / crops)
        if "decode" in stages:
            assert len(r["decode_step_ms"]["samples"]) == repeats * steps, p
            first = 730 + prompt_len
            assert r["decode_positions"] == [first, first + steps - 1], r["decode_positions"]
    # Speed-ups: other / int8, median/median and min/min.
    assert set(doc["ratios"]) == {"vision_ms_per_crop", "image_prefill_ms", "decode_ms_per_token",
                                  "vision_cpu_ms_per_crop", "image_prefill_cpu_ms",
                                  "decode_cpu_ms_per_token"}, list(doc["ratios"])
    for key, rat in doc["ratios"].items():
        for base in ("fp32", "bf16"):
            pair = rat["int8_vs_" + base]
            if base in res and "int8" in res and key in res[base]:
                close(pair["median"], res[base][key]["median"] / res["int8"][key]["median"])
                close(pair["min"], res[base][key]["min"] / res["int8"][key]["min"])
            else:
                assert pair["median"] is None and pair["min"] is None, (key, base, pair)
    roof = doc["decode_roofline"]
    close(roof["tokens_per_s"], m["read_bandwidth_gbs"] * 1e9 / b["weights_per_token"])
    if "int8" in res and "decode_ms_per_token" in res["int8"]:
        dec = res["int8"]["decode_ms_per_token"]
        close(roof["fraction_median"], 1000 / dec["median"] / roof["tokens_per_s"])
        close(roof["fraction_min"], 1000 / dec["min"] / roof["tokens_per_s"])
    else:
        assert roof["fraction_median"] is None
    want = {"ratios.vision_ms_per_crop.int8_vs_fp32.median": (">=", 4),
            "ratios.vision_ms_per_crop.int8_vs_bf16.median": (">=", 1.5),
            "ratios.image_prefill_ms.int8_vs_fp32.median": (">=", 4),
            "ratios.image_prefill_ms.int8_vs_bf16.median": (">=", 1.5),
            "decode_roofline.fraction_median": (">=", 0.65),
            "ratios.decode_ms_per_token.int8_vs_bf16.median": (">=", 1.6),
            "results.int8.load_s": ("<=", 15)}
    assert [t["metric"] for t in doc["targets"]] == list(want), doc["targets"]
    statuses = {}
    for t in doc["targets"]:
        op, threshold = want[t["metric"]]
        assert (t["op"], t["threshold"]) == (op, threshold), t
        try:
            value = lookup(doc, t["metric"])
        except (KeyError, TypeError):
            value = None
        if value is None:
            assert t["value"] is None and t["status"] == "SKIP", t
        else:
            close(t["value"], value)
            ok = value >= threshold if op == ">=" else value <= threshold
            assert t["status"] == ("PASS" if ok else "FAIL"), t
        statuses[t["metric"]] = t["status"]
    return statuses


def check_table(txt, doc):
    lines = txt.splitlines()
    for t in doc["targets"]:
        row = [l for l in lines if l.startswith("| " + t["name"] + " |")]
        assert len(row) == 1 and row[0].rstrip().endswith("| " + t["status"] + " |"), (t["name"], row)
    for label in ("vision encode ms/crop", "image prefill ms", "decode ms/token", "vision encode CPU ms/crop",
                  "image prefill CPU ms", "decode CPU ms/token", "load s", "RSS after load MB"):
        assert any(l.startswith("| " + label) for l in lines), label


full = json.load(open(out / "all.json"))
s = check_common(full, ["fp32", "bf16", "int8"], ["vision", "prefill", "decode"], 1, 3)
assert "SKIP" not in s.values(), s
check_table((out / "all.txt").read_text(), full)

dec = json.load(open(out / "decode.json"))
s = check_common(dec, ["int8"], ["decode"], 2, 2)
assert [m for m, v in s.items() if v != "SKIP"] == ["decode_roofline.fraction_median", "results.int8.load_s"], s
check_table((out / "decode.txt").read_text(), dec)
print("bench_stages smoke: ok (%d crops, int8 decode %.2f ms/token, %.0f%% of roofline)"
      % (crops, full["results"]["int8"]["decode_ms_per_token"]["median"],
         100 * full["decode_roofline"]["fraction_median"]))
