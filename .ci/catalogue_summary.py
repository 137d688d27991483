"""Summarise a catalogue run's JUnit XML: per causal-LM type, passed / refused / not buildable / failed.

    python .ci/catalogue_summary.py catalogue.xml [--json out.json]

A type passes when every drawn configuration that builds passes; it is refused when hfself refuses it (the skip
says why); it fails when any configuration fails. Exits 1 on a failure, so a scheduled run goes red.
"""

import argparse
import json
import re
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict

CASE = re.compile(r"\[(?P<type>.+)-(?P<variant>\d+)\]$")


def outcomes(path: str) -> dict[str, dict[int, tuple[str, str]]]:
    """{model_type: {variant: (outcome, message)}} for test_identity_on_every_causal_lm."""
    by_type = defaultdict(dict)
    for case in ET.parse(path).getroot().iter("testcase"):
        match = CASE.search(case.get("name", ""))
        if not case.get("name", "").startswith("test_identity_on_every_causal_lm") or not match:
            continue
        failure = case.find("failure") if case.find("failure") is not None else case.find("error")
        skipped = case.find("skipped")
        if failure is not None:
            outcome, message = "failed", failure.get("message", "")
        elif skipped is not None:
            message = skipped.get("message", "")
            outcome = "refused" if "refused:" in message else "not buildable"
        else:
            outcome, message = "passed", ""
        by_type[match["type"]][int(match["variant"])] = (outcome, message)
    return by_type


def verdict(variants: dict[int, tuple[str, str]]) -> str:
    kinds = {outcome for outcome, _ in variants.values()}
    for kind in ("failed", "refused", "passed"):
        if kind in kinds:
            return kind
    return "not buildable"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("xml")
    parser.add_argument("--json", help="write the per-type table here")
    args = parser.parse_args()
    by_type = outcomes(args.xml)
    verdicts = {t: verdict(v) for t, v in sorted(by_type.items())}
    counts = defaultdict(list)
    for model_type, kind in verdicts.items():
        counts[kind].append(model_type)
    buildable = len(verdicts) - len(counts["not buildable"])
    cases = sum(len(v) for v in by_type.values())
    print(f"{len(verdicts)} types, {cases} configurations; {buildable} types build")
    for kind in ("passed", "refused", "failed", "not buildable"):
        share = f" ({len(counts[kind]) / max(buildable, 1):.1%} of buildable)" if kind != "not buildable" else ""
        print(f"{kind}: {len(counts[kind])}{share}")
        if kind != "passed":
            for model_type in counts[kind]:
                reason = next((m for o, m in by_type[model_type].values() if o == kind), "")
                print(f"  {model_type}: {reason[:160]}")
    mixed = {t: v for t, v in by_type.items() if verdicts[t] == "passed" and len({o for o, _ in v.values()}) > 1}
    if mixed:
        print("passed where built (other configurations not buildable): " + ", ".join(sorted(mixed)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({t: {"verdict": verdicts[t], "variants": {str(k): o for k, (o, _) in sorted(v.items())}}
                       for t, v in sorted(by_type.items())}, f, indent=1)
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
