"""Checks bench_stages' JSON and summary (called by bench_stages_smoke.sh).

  check_bench_stages.py OUT_DIR CONFIG_JSON CROPS_PNG

OUT_DIR holds all.json/all.txt (fp32,bf16,int8 under every ISA --int8-isas auto picks, every
stage, --repeats 1 --decode-steps 3) and decode.json/decode.txt (int8 under avx2, --stages
decode, --repeats 2 --decode-steps 2). Exits non-zero with the failed assertion on any mismatch.
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


# Targets per ISA: metric suffix (after the column) -> (op, threshold).
TARGETS = {
    "avx2": [("vision_ms_per_crop.vs_fp32", ">=", 1.5), ("decode_ms_per_token.vs_fp32", ">=", 5),
             ("fraction", ">=", 0.60), ("load_s", "<=", 15)],
    "avxvnni": [("vision_ms_per_crop.vs_fp32", ">=", 2.5), ("fraction", ">=", 0.65), ("load_s", "<=", 15)],
    "avx512vnni": [("vision_ms_per_crop.vs_fp32", ">=", 4), ("vision_ms_per_crop.vs_bf16", ">=", 1.5),
                   ("image_prefill_ms.vs_fp32", ">=", 4), ("image_prefill_ms.vs_bf16", ">=", 1.5),
                   ("fraction", ">=", 0.65), ("decode_ms_per_token.vs_bf16", ">=", 1.6), ("load_s", "<=", 15)],
    "other": [("fraction", ">=", 0.65), ("load_s", "<=", 15)],
}


def metric(col, suffix):
    if suffix == "fraction":
        return "decode_roofline.per_isa.%s.fraction_median" % col
    if suffix == "load_s":
        return "results.%s.load_s" % col
    return "ratios.%s.%s.median" % (col, suffix)


def want_targets(isa, col):
    family = "avxvnni" if isa.startswith("avxvnni") else isa if isa in TARGETS else "other"
    return [(metric(col, m), op, t) for m, op, t in TARGETS[family]]


def check_probe(p, threads):
    assert p["threads"] == threads and p["passes"] >= 1 and len(p["pass_gbs"]) == p["passes"], p
    close(p["gbs"], max(p["pass_gbs"]))
    assert len(p["pass_layouts"]) == p["passes"], p
    assert p["best_layout"] == p["pass_layouts"][p["pass_gbs"].index(max(p["pass_gbs"]))], p
    assert p["buffer_bytes"] >= max(1 << 30, 8 * p["llc_bytes"]), p


def check_common(doc, precisions, stages, repeats, steps):
    assert doc["precisions"] == precisions, doc["precisions"]
    assert doc["stages"] == stages, doc["stages"]
    assert doc["repeats"] == repeats and doc["decode_steps"] == steps
    assert doc["crops"] == crops, (doc["crops"], crops)
    assert doc["threads"] >= 1 and "--json" in doc["command"]
    isas = doc["int8_isas"]
    assert len(isas) == len(set(isas)) and ("int8" in precisions) == bool(isas), isas
    int8_cols = ["int8-" + i for i in isas]
    columns = [c for p in precisions for c in (int8_cols if p == "int8" else [p])]
    assert doc["columns"] == columns, doc["columns"]
    m = doc["machine"]
    assert m["read_bandwidth_gbs"] == max(m["read_bandwidth_start_gbs"], m["read_bandwidth_end_gbs"]) > 0
    for which in ("start", "end"):
        check_probe(m["probe_" + which], doc["threads"])
        close(m["probe_" + which]["gbs"], m["read_bandwidth_%s_gbs" % which])
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
    assert list(res) == columns, list(res)
    for col, r in res.items():
        assert r["precision"] == ("int8" if col.startswith("int8-") else col), (col, r["precision"])
        assert r["isa"] == (col[5:] if col.startswith("int8-") else None), (col, r["isa"])
        assert r["load_s"] > 0 and r["rss_after_load_mb"] > 0 and r["parameters"] > 0, col
        assert r["random_embeds"] == ("vision" not in stages), col
        keys = {"vision": ["vision_ms", "vision_ms_per_crop", "vision_cpu_ms", "vision_cpu_ms_per_crop"],
                "prefill": ["image_prefill_ms", "image_prefill_cpu_ms"],
                "decode": ["decode_ms_per_token", "decode_cpu_ms_per_token"]}
        for stage, names in keys.items():
            for k in names:
                assert (k in r) == (stage in stages), (col, k)
                if k in r:
                    check_stat(r[k], repeats)
        if "vision" in stages:
            for total, per_crop in (("vision_ms", "vision_ms_per_crop"), ("vision_cpu_ms", "vision_cpu_ms_per_crop")):
                for a, b_ in zip(r[total]["samples"], r[per_crop]["samples"], strict=True):
                    close(b_, a / crops)
        if "decode" in stages:
            assert len(r["decode_step_ms"]["samples"]) == repeats * steps, col
            first = 730 + prompt_len
            assert r["decode_positions"] == [first, first + steps - 1], r["decode_positions"]
    # Speed-ups per INT8 column: other / int8, median/median and min/min.
    assert list(doc["ratios"]) == int8_cols, list(doc["ratios"])
    for col in int8_cols:
        rat = doc["ratios"][col]
        assert set(rat) == {"vision_ms_per_crop", "image_prefill_ms", "decode_ms_per_token",
                            "vision_cpu_ms_per_crop", "image_prefill_cpu_ms", "decode_cpu_ms_per_token"}, list(rat)
        for key, pair2 in rat.items():
            for base in ("fp32", "bf16"):
                pair = pair2["vs_" + base]
                if base in res and key in res[base]:
                    close(pair["median"], res[base][key]["median"] / res[col][key]["median"])
                    close(pair["min"], res[base][key]["min"] / res[col][key]["min"])
                else:
                    assert pair["median"] is None and pair["min"] is None, (col, key, base, pair)
    roof = doc["decode_roofline"]
    read = b["weights_per_token"] + b["kv_cache_per_token"]  # weights and the KV cache: the roofline's bytes
    assert roof["bytes_per_token"] == read, roof
    close(roof["tokens_per_s"], m["read_bandwidth_gbs"] * 1e9 / read)
    assert list(roof["per_isa"]) == int8_cols, list(roof["per_isa"])
    for col in int8_cols:
        per = roof["per_isa"][col]
        assert per["isa"] == col[5:], per
        if "decode_ms_per_token" in res[col]:
            dec = res[col]["decode_ms_per_token"]
            close(per["fraction_median"], 1000 / dec["median"] / roof["tokens_per_s"])
            close(per["fraction_min"], 1000 / dec["min"] / roof["tokens_per_s"])
            close(per["achieved_gbs_median"], 1000 / dec["median"] * read / 1e9)
            assert per["above_probe"] == (per["fraction_median"] > 1), per
        else:
            assert per["fraction_median"] is None and per["above_probe"] is False, per
    want = [(col, t) for col in int8_cols for t in want_targets(col[5:], col)]
    assert [(t["column"], t["metric"]) for t in doc["targets"]] == [(c, w[0]) for c, w in want], doc["targets"]
    statuses = {}
    for t, (col, (metric_, op, threshold)) in zip(doc["targets"], want):
        assert t["isa"] == col[5:], t
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
            if metric_.endswith("fraction_median") and value > 1:
                assert t["status"] == "INVALID", t  # above the probe: no roofline
            else:
                assert t["status"] == ("PASS" if ok else "FAIL"), t
        statuses[t["metric"]] = t["status"]
    return statuses


def check_table(txt, doc):
    lines = txt.splitlines()
    for t in doc["targets"]:
        row = [l for l in lines if l.startswith("| %s | %s |" % (t["isa"], t["name"]))]
        assert len(row) == 1 and row[0].rstrip().endswith("| " + t["status"] + " |"), (t["name"], row)
        if t["status"] == "INVALID":
            assert "ABOVE PROBE: roofline invalid" in row[0], row
    header = [l for l in lines if l.startswith("| stage |")]
    want = " | ".join("int8 " + c[5:] if c.startswith("int8-") else c for c in doc["columns"])
    assert header == ["| stage | %s |" % want], header
    for label in ("vision encode ms/crop", "image prefill ms", "decode ms/token", "vision encode CPU ms/crop",
                  "image prefill CPU ms", "decode CPU ms/token", "load s", "RSS after load MB"):
        assert any(l.startswith("| " + label) for l in lines), label
    for col, per in doc["decode_roofline"]["per_isa"].items():
        row = [l for l in lines if l.startswith("| %s | " % per["isa"]) and l.count("|") == 10]
        assert len(row) == 1, (col, row)
        assert ("ABOVE PROBE" in row[0]) == per["above_probe"], row


full = json.load(open(out / "all.json"))
s = check_common(full, ["fp32", "bf16", "int8"], ["vision", "prefill", "decode"], 1, 3)
assert "SKIP" not in s.values(), s
check_table((out / "all.txt").read_text(), full)

dec = json.load(open(out / "decode.json"))
s = check_common(dec, ["int8"], ["decode"], 2, 2)
assert dec["int8_isas"] == ["avx2"], dec["int8_isas"]
assert [m for m, v in s.items() if v != "SKIP"] == ["decode_roofline.per_isa.int8-avx2.fraction_median",
                                                    "results.int8-avx2.load_s"], s
check_table((out / "decode.txt").read_text(), dec)
first = "int8-" + full["int8_isas"][0]
print("bench_stages smoke: ok (%d crops, ISAs %s; int8 %s decode %.2f ms/token, %.0f%% of probe)"
      % (crops, ",".join(full["int8_isas"]), first[5:], full["results"][first]["decode_ms_per_token"]["median"],
         100 * full["decode_roofline"]["per_isa"][first]["fraction_median"]))
