#!/usr/bin/env python3
"""Summarises critest junit reports and enforces the baseline.

Usage: critest_report.py --baseline FILE MODE=JUNIT.xml [MODE=JUNIT.xml ...]
       critest_report.py --write-baseline FILE MODE=JUNIT.xml ...

The baseline (TSV: mode<TAB>spec<TAB>reason, mode is spdy, websocket or any)
lists the specs expected to fail. Exit status 1 when a spec outside the
baseline fails (a regression); specs in the baseline that now pass are
printed so the baseline can be shrunk in the same change.
"""
import argparse
import sys
import xml.etree.ElementTree as ET


def spec_name(case):
    name = case.get("name", "")
    # Ginkgo prefixes the node type ("[It] ").
    if name.startswith("[It] "):
        name = name[5:]
    return name.strip()


def read_report(path):
    """Returns {spec: 'passed'|'failed'|'skipped'} for real specs."""
    results = {}
    root = ET.parse(path).getroot()
    for case in root.iter("testcase"):
        name = spec_name(case)
        # Suite-level setup/teardown nodes are not specs.
        if name.startswith("[SynchronizedBeforeSuite]") or name.startswith("[SynchronizedAfterSuite]") \
                or name.startswith("[BeforeSuite]") or name.startswith("[AfterSuite]") \
                or name.startswith("[ReportAfterSuite]") or name.startswith("[ReportBeforeSuite]"):
            if case.find("failure") is not None or case.find("error") is not None:
                results[name] = "failed"
            continue
        status = case.get("status", "")
        if case.find("failure") is not None or case.find("error") is not None or status in ("failed", "panicked", "timedout", "interrupted", "aborted"):
            results[name] = "failed"
        elif case.find("skipped") is not None or status in ("skipped", "pending"):
            results[name] = "skipped"
        else:
            results[name] = "passed"
    return results


def read_baseline(path):
    entries = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split("\t")
            if len(parts) != 3 or parts[0] not in ("spdy", "websocket", "any") or not parts[2].strip():
                sys.exit(f"{path}:{n}: expected 'mode<TAB>spec<TAB>reason' with mode spdy|websocket|any and a reason")
            entries[(parts[0], parts[1])] = parts[2]
    return entries


def expected_to_fail(baseline, mode, spec):
    return (mode, spec) in baseline or ("any", spec) in baseline


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline")
    ap.add_argument("--write-baseline")
    ap.add_argument("reports", nargs="+")
    args = ap.parse_args()

    runs = {}
    for item in args.reports:
        mode, _, path = item.partition("=")
        runs[mode] = read_report(path)

    if args.write_baseline:
        failing = {}
        for mode, results in runs.items():
            for spec, status in results.items():
                if status == "failed":
                    failing.setdefault(spec, set()).add(mode)
        with open(args.write_baseline, "w", encoding="utf-8") as f:
            f.write("# critest specs expected to fail with krio: mode<TAB>spec<TAB>reason.\n")
            f.write("# This list may only shrink. conformance/run-critest.sh fails on any other failure.\n")
            for spec in sorted(failing):
                mode = "any" if failing[spec] == set(runs) else sorted(failing[spec])[0]
                f.write(f"{mode}\t{spec}\tTODO reason\n")
        return 0

    baseline = read_baseline(args.baseline) if args.baseline else {}
    regressions, newly_passing = [], []
    totals = [0, 0, 0]
    for mode, results in runs.items():
        passed = [s for s, st in results.items() if st == "passed"]
        failed = [s for s, st in results.items() if st == "failed"]
        skipped = [s for s, st in results.items() if st == "skipped"]
        totals[0] += len(passed)
        totals[1] += len(failed)
        totals[2] += len(skipped)
        print(f"critest ({mode}): {len(passed)} passed, {len(failed)} failed, {len(skipped)} skipped")
        for spec in sorted(failed):
            known = expected_to_fail(baseline, mode, spec)
            print(f"  FAILED ({'baseline' if known else 'REGRESSION'}) {spec}")
            if not known:
                regressions.append((mode, spec))
        for spec in sorted(passed):
            if expected_to_fail(baseline, mode, spec):
                newly_passing.append((mode, spec))

    if newly_passing:
        print("Specs in the baseline that now pass (remove them from conformance/critest-baseline.tsv):")
        for mode, spec in newly_passing:
            print(f"  {mode}: {spec}")
    if regressions:
        print(f"{len(regressions)} spec(s) failed that the baseline does not expect:")
        for mode, spec in regressions:
            print(f"  {mode}: {spec}")
    print(f"critest: {totals[0]} passed, {totals[1]} failed, {totals[2]} skipped")
    return 1 if regressions else 0


if __name__ == "__main__":
    sys.exit(main())
