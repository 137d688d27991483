"""Run every benchmark of a preset and write one table: markdown + JSON.

    python benchmarks/run_all.py --preset cpu-small              # about 8 minutes on a 2-core CPU
    python benchmarks/run_all.py --preset gpu                    # one GPU (1B/8B shapes)
    python benchmarks/run_all.py --preset cpu-real --record      # the persona on SmolLM2, about 35 minutes
    python benchmarks/run_all.py --preset cpu-small --record     # into benchmarks/results/ and the README table
    python benchmarks/run_all.py --preset cpu-small --only anima,spiral

Each benchmark runs in its own process (one's memory and compiled graphs never touch the next) and writes its
JSON; this script collects their rows into ``<preset>.md`` and ``<preset>.json`` under outputs/benchmarks/ (or,
with ``--record``, under the tracked benchmarks/results/, also replacing the table between the
``benchmarks:<preset>`` markers of README.md). With ``--only``, the table keeps the other benchmarks' latest
results from the same folder.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from harness import RECORDED, SCRATCH, environment

HERE = Path(__file__).parent
README = HERE.parent / "README.md"

# name -> (script, arguments). CPU shapes resemble real use where a CPU can afford it: "1b-slice" is a few
# layers of Llama-3.2-1B's shape, and the anima SAEs are 32x wider than the residual stream.
PRESETS = {
    "cpu-small": {
        "identity": ("bench_identity.py", ["--preset", "small"]),
        "identity-1b-slice": ("bench_identity.py", ["--preset", "1b-slice", "--seq_len", "128", "--batch_size", "1",
                                                    "--rows", "train,generate", "--new_tokens", "16",
                                                    "--rounds", "5"]),
        "anima": ("bench_anima.py", ["--preset", "small", "--d_sae", "8192"]),
        "anima-1b-slice": ("bench_anima.py", ["--preset", "1b-slice", "--d_sae", "65536", "--new_tokens", "16",
                                              "--rounds", "5"]),
        "temporal": ("bench_temporal.py", ["--preset", "default"]),
        "diffusion": ("bench_diffusion.py", ["--sample_steps", "4"]),
        "spiral": ("bench_spiral.py", ["--lengths", "1024", "2048", "4096"]),
        "optim": ("bench_optim.py", []),
    },
    # The persona on the real SmolLM2-135M-Instruct: six ways to give it a persona, side by side.
    "cpu-real": {
        "persona": ("bench_persona.py", []),
    },
    "gpu": {
        "identity": ("bench_identity.py", ["--device", "cuda", "--preset", "1b", "--dtype", "bfloat16",
                                           "--seq_len", "2048", "--batch_size", "4"]),
        "anima": ("bench_anima.py", ["--device", "cuda", "--preset", "8b", "--dtype", "bfloat16",
                                     "--d_sae", "32768"]),
        "temporal": ("bench_temporal.py", ["--device", "cuda", "--preset", "1b", "--dtype", "bfloat16",
                                           "--batch_size", "8", "--seq_len", "1024"]),
        "diffusion": ("bench_diffusion.py", ["--device", "cuda"]),
        "spiral": ("bench_spiral.py", ["--device", "cuda", "--dtype", "bfloat16", "--lengths", "4096", "16384",
                                       "65536"]),
        "optim": ("bench_optim.py", ["--device", "cuda", "--preset", "350m", "--steps", "500"]),
    },
}


def fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def table(results: dict[str, dict]) -> str:
    """One markdown row per measured ratio: median [IQR], limit, verdict."""
    lines = ["| benchmark | measure | ratio (median) | IQR | limit | verdict |", "|---|---|---|---|---|---|"]
    for name, data in results.items():
        if "error" in data:
            lines.append(f"| {name} | failed: {data['error']} | | | | |")
            continue
        for row in data["rows"]:
            r = row["ratio"]
            iqr = "–" if r["n"] == 1 else f"{r['q1']:.3f}–{r['q3']:.3f}"
            limit = fmt(row["limit"]) + (f" ({row['limit_note']})" if row["limit_note"] else "")
            metric = row["metric"] + (f"; {row['notes']}" if row["notes"] else "")
            lines.append(f"| {name} | {metric} | {fmt(r['median'])} | {iqr} | {limit} | {row['verdict']} |")
    return "\n".join(lines) + "\n"


def replace_block(text: str, preset: str, block: str) -> str:
    start, end = f"<!-- benchmarks:{preset}:start -->", f"<!-- benchmarks:{preset}:end -->"
    if start not in text or end not in text:
        raise SystemExit(f"README.md has no {start} ... {end} block to replace")
    before, rest = text.split(start, 1)
    return before + start + "\n" + block + end + rest.split(end, 1)[1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="cpu-small", choices=sorted(PRESETS))
    parser.add_argument("--only", default=None, help="comma-separated benchmark names of the preset")
    parser.add_argument("--record", action="store_true",
                        help="write into benchmarks/results/<preset>/ and update README.md's table")
    args = parser.parse_args(argv)
    chosen = PRESETS[args.preset]
    if args.only:
        unknown = set(args.only.split(",")) - set(chosen)
        if unknown:
            raise SystemExit(f"unknown benchmark(s) {sorted(unknown)}; {args.preset} has {sorted(chosen)}")
        chosen = {k: v for k, v in chosen.items() if k in args.only.split(",")}
    folder = (RECORDED if args.record else SCRATCH) / args.preset
    folder.mkdir(parents=True, exist_ok=True)

    results, seconds = {}, {}
    for name in PRESETS[args.preset]:  # with --only, the others' latest results in the folder stay in the table
        previous = folder / f"{name}.json"
        if name not in chosen and previous.exists():
            results[name] = json.loads(previous.read_text(encoding="utf-8"))
    for index, (name, (script, script_args)) in enumerate(chosen.items(), 1):
        out = folder / f"{name}.json"
        print(f"[{index}/{len(chosen)}] {name}: {script} {' '.join(script_args)}", flush=True)
        started = time.perf_counter()
        done = subprocess.run([sys.executable, str(HERE / script), *script_args, "--out", str(out)], cwd=HERE.parent)
        seconds[name] = time.perf_counter() - started
        if done.returncode != 0:
            results[name] = {"error": f"exit status {done.returncode}"}
            continue
        results[name] = json.loads(out.read_text(encoding="utf-8"))

    env = environment("cuda" if args.preset == "gpu" else "cpu", seed=0)
    header = (f"Preset `{args.preset}`, git `{env['git'][:12]}`, {env['device_name']}, torch "
              f"{env['versions'].get('torch')}, transformers {env['versions'].get('transformers')}. Each row is "
              f"other ÷ base per interleaved round, as its measure says: for speeds > 1 is faster, for times, "
              f"bytes and losses < 1 is better.\n\n")
    markdown = header + table({name: results[name] for name in PRESETS[args.preset] if name in results})
    markdown += "".join(f"\n{results[name]['markdown']}" for name in PRESETS[args.preset]
                        if "markdown" in results.get(name, {}))  # a benchmark's own side-by-side table
    (folder / f"{args.preset}.md").write_text(markdown, encoding="utf-8")
    (folder / f"{args.preset}.json").write_text(json.dumps({"environment": env, "seconds": seconds,
                                                            "results": results}, indent=2) + "\n", encoding="utf-8")
    print("\n" + markdown)
    print(f"wrote {folder / args.preset}.md and .json ({sum(seconds.values()) / 60:.1f} minutes)")
    if args.record:
        README.write_text(replace_block(README.read_text(encoding="utf-8"), args.preset, markdown), encoding="utf-8")
        print(f"updated the {args.preset} table in {README}")
    if any("error" in r for r in results.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
