"""Compare the output folders of two tools/fixed_seed_runs.sh runs, ignoring what differs between identical runs
(timings and peak memory, the report's clock, matplotlib's random SVG ids, the order peft writes its module sets
in, and the pickled training arguments): python tools/compare_outputs.py OLD NEW"""

import json
import os
import re
import sys

TIMING = re.compile(r"runtime|preparation_time|per_second|seconds_to_first_step|total_flos|peak_rss")
PEFT_SETS = ("target_modules", "modules_to_save")  # sets in peft's config, written in the process's hash order
REPORT_NOISE = re.compile(rb"written [0-9-]+ [0-9:]+|trained for [0-9.]+ (s|min)|[#\"][mp][0-9a-f]{10}\b")


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if not TIMING.search(k)}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def comparable(path: str):
    """A file's content as compared: JSON without timing keys, the model card without timing lines, the report
    without its noise, anything else byte for byte (training_args.bin, a pickle, is skipped)."""
    with open(path, "rb") as f:
        data = f.read()
    name = os.path.basename(path)
    if name == "adapter_config.json":
        config = json.loads(data)
        return {k: sorted(v) if k in PEFT_SETS and isinstance(v, list) else v for k, v in config.items()}
    if name.endswith(".json"):
        return without_timings(json.loads(data))
    if name == "README.md":
        return [line for line in data.decode().splitlines() if not TIMING.search(line)]
    if name == "report.html":
        return REPORT_NOISE.sub(b"X", data)
    return data


def differences(old: str, new: str) -> list[str]:
    found = []
    for run in sorted(os.listdir(old)):
        if not os.path.isdir(os.path.join(old, run)) or run.startswith("cache"):
            continue
        names = {os.path.relpath(os.path.join(root, f), old)
                 for root, _, files in os.walk(os.path.join(old, run)) for f in files}
        names |= {os.path.relpath(os.path.join(root, f), new)
                  for root, _, files in os.walk(os.path.join(new, run)) for f in files}
        for name in sorted(n for n in names if os.path.basename(n) != "training_args.bin"):
            a, b = os.path.join(old, name), os.path.join(new, name)
            if not (os.path.exists(a) and os.path.exists(b)):
                found.append(f"only in {'new' if os.path.exists(b) else 'old'}: {name}")
            elif comparable(a) != comparable(b):
                found.append(f"differs: {name}")
    return found


if __name__ == "__main__":
    found = differences(*sys.argv[1:3])
    print("\n".join(found) if found else "identical")
    sys.exit(1 if found else 0)
