#!/usr/bin/env python3
"""Summarises a run-bench.sh run: krio and containerd side by side.

Reads, from OUT_DIR:
  raw/<runtime>-<bench>.jsonl      podbench output (bench: pod, container, mem)
  critest-bench-<runtime>/         critest -benchmark output: *_benchmark_data.json
                                   (cri-tools pkg/benchmark LifecycleBenchmarksResultsSet)
                                   and report.json (ginkgo JSON report)
  meta.json                        versions and parameters, written by run-bench.sh
Prints an aligned table (median and p90 per operation, krio/containerd ratio of
the medians) and writes everything to OUT_DIR/bench.json.

Exit status: 0, or 1 when containerd (the reference) failed a podbench step,
which means the setup is broken rather than krio.
"""

import json
import math
import os
import statistics
import sys

RUNTIMES = ("krio", "containerd")

POD_OPS = ["RunPodSandbox", "StopPodSandbox", "RemovePodSandbox"]
CONTAINER_OPS = ["RunPodSandbox", "CreateContainer", "StartContainer", "StopContainer",
                 "RemoveContainer", "StopPodSandbox", "RemovePodSandbox"]
# Derived per-iteration sums: name -> the ops summed.
POD_SUMS = {"pod cycle total": POD_OPS}
CONTAINER_SUMS = {
    "pod+container start (Run+Create+Start)": ["RunPodSandbox", "CreateContainer", "StartContainer"],
    "container cycle total": CONTAINER_OPS,
}
# critest -benchmark files: file -> label prefix; operation names come from the file.
CRITEST_FILES = [
    ("pod_benchmark_data.json", "pod", "benchmark about lifecycle of PodSandbox"),
    ("container_benchmark_data.json", "container", "benchmark about basic operations on Container"),
    ("image_lifecycle_benchmark_data.json", "image", "benchmark about basic operations on Image"),
    ("image_listing_benchmark_data.json", "image", "benchmark about listing Image"),
]
CRITEST_SCRATCH = ("start a container from scratch", "create PodSandbox and container")


def load_jsonl(path):
    rows = []
    if not os.path.exists(path):
        return None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return rows


def stats(values):
    if not values:
        return None
    s = sorted(values)
    p90 = s[max(0, math.ceil(0.9 * len(s)) - 1)]
    return {"n": len(s), "median": statistics.median(s), "p90": p90,
            "min": s[0], "max": s[-1]}


def na_reason(err):
    """Short reason for an error record (a podbench line or a critest failure)."""
    if err is None:
        return "not run"
    code = err.get("code", "")
    msg = err.get("error", "")
    if code == "Unimplemented" or "code = Unimplemented" in msg:
        return "RPC unimplemented"
    if code:
        return "failed: " + code
    return "failed: " + msg.split("\n")[0]


def podbench_section(out, runtime, bench, ops, sums):
    """Returns {op: {"stats":..} or {"na":reason}} and the list of errors."""
    rows = load_jsonl(os.path.join(out, "raw", f"{runtime}-{bench}.jsonl"))
    res = {}
    errors = [r for r in (rows or []) if r.get("error")]
    err = errors[0] if errors else None
    per_op = {}
    per_iter = {}
    for r in rows or []:
        if r.get("error") or "ms" not in r or r.get("iter", -1) < 0:
            continue
        per_op.setdefault(r["op"], []).append(r["ms"])
        per_iter.setdefault(r["iter"], {})[r["op"]] = r["ms"]
    for op in ops:
        st = stats(per_op.get(op, []))
        res[op] = {"stats": st} if st else {"na": na_reason(err) if rows is not None else "not run"}
    for name, parts in sums.items():
        vals = [sum(it[p] for p in parts) for it in per_iter.values() if all(p in it for p in parts)]
        st = stats(vals)
        res[name] = {"stats": st} if st else {"na": na_reason(err) if rows is not None else "not run"}
    once = [r for r in (rows or []) if r.get("op") == "PullImage (once)" and "ms" in r]
    if once:
        res["PullImage (once, not iterated)"] = {"stats": stats([once[0]["ms"]])}
    return res, errors


def mem_section(out, runtime):
    rows = load_jsonl(os.path.join(out, "raw", f"{runtime}-mem.jsonl"))
    errors = [r for r in (rows or []) if r.get("error")]
    err = errors[0] if errors else None
    res = {}
    by_op = {r["op"]: r for r in rows or [] if "kib" in r}
    for op, label in (("helper_rss_per_container", "monitor/shim RSS per container"),
                      ("helper_rss_total", "monitor/shim RSS total"),
                      ("daemon_rss", "daemon RSS with the containers running")):
        r = by_op.get(op)
        if r:
            res[label] = {"value": r["kib"] / 1024.0, "procs": r.get("procs"),
                          "containers": r.get("containers")}
        else:
            res[label] = {"na": na_reason(err) if rows is not None else "not run"}
    return res, errors


def ginkgo_specs(path):
    """[(full text, state, failure message, report entries)] from a ginkgo JSON report."""
    specs = []
    try:
        with open(path) as f:
            suites = json.load(f)
    except (OSError, json.JSONDecodeError):
        return specs
    for suite in suites if isinstance(suites, list) else [suites]:
        for sr in suite.get("SpecReports") or []:
            text = " ".join((sr.get("ContainerHierarchyTexts") or []) + [sr.get("LeafNodeText") or ""])
            failure = (sr.get("Failure") or {}).get("Message", "")
            specs.append((text, sr.get("State", ""), failure, sr.get("ReportEntries") or []))
    return specs


def critest_section(out, runtime):
    d = os.path.join(out, f"critest-bench-{runtime}")
    res = {}
    errors = []
    specs = ginkgo_specs(os.path.join(d, "report.json"))
    ran = os.path.isdir(d)

    suite_stopped = any(state in ("interrupted", "aborted", "timedout") for _, state, _, _ in specs)

    def spec_reason(needle):
        for text, state, failure, _ in specs:
            if needle not in text:
                continue
            if state == "passed":
                return "no data written"
            if state == "skipped":
                return "not run: suite stopped" if suite_stopped else "skipped"
            if state in ("interrupted", "aborted", "timedout"):
                errors.append({"runtime": runtime, "op": "critest: " + needle, "error": f"{state}: {failure}"})
                return "timed out"
            errors.append({"runtime": runtime, "op": "critest: " + needle, "error": failure or state})
            return na_reason({"error": failure or state})
        return "not run" if not specs else "spec not found"

    for fname, prefix, needle in CRITEST_FILES:
        path = os.path.join(d, fname)
        data = None
        if os.path.exists(path):
            try:
                with open(path) as f:
                    data = json.load(f)
            except (OSError, json.JSONDecodeError):
                data = None
        if data and data.get("datapoints"):
            names = data.get("operationsNames") or []
            for i, name in enumerate(names):
                vals = [dp["operationsDurationsNs"][i] / 1e6 for dp in data["datapoints"]
                        if len(dp.get("operationsDurationsNs") or []) > i]
                res[f"{prefix}: {name}"] = {"stats": stats(vals)}
        else:
            reason = spec_reason(needle) if ran else "not run"
            ops = {"pod_benchmark_data.json": ["CreatePod", "StatusPod", "StopPod", "RemovePod"],
                   "container_benchmark_data.json": ["CreateContainer", "StartContainer",
                                                     "StatusContainer", "StopContainer",
                                                     "RemoveContainer"],
                   "image_lifecycle_benchmark_data.json": ["PullImage", "StatusImage", "RemoveImage"],
                   "image_listing_benchmark_data.json": ["ListImages"]}[fname]
            for name in ops:
                res[f"{prefix}: {name}"] = {"na": reason}
    # The "start a container from scratch" spec reports a gmeasure experiment
    # as a ginkgo report entry (one measured duration), not a data file.
    label = "pod+container from scratch (1 sample)"
    found = None
    for text, _state, _failure, entries in specs:
        if CRITEST_SCRATCH[0] not in text:
            continue
        for e in entries:
            try:
                exp = json.loads((e.get("Value") or {}).get("AsJSON") or "null") or {}
            except json.JSONDecodeError:
                continue
            for m in exp.get("Measurements") or []:
                if m.get("Name") == CRITEST_SCRATCH[1] and m.get("Durations"):
                    found = [v / 1e6 for v in m["Durations"]]
    if found:
        res[label] = {"stats": stats(found)}
    else:
        res[label] = {"na": spec_reason(CRITEST_SCRATCH[0]) if ran else "not run"}
    return res, errors


CELL = 30


def fmt_ms(st):
    return f"{st['median']:8.1f} ms  p90 {st['p90']:8.1f}"


def cell(entry):
    if "stats" in entry:
        return fmt_ms(entry["stats"])
    if "value" in entry:
        procs = f" ({entry['procs']} procs)" if entry.get("procs") is not None else ""
        return f"{entry['value']:8.1f} MiB{procs}"
    text = "n/a (" + entry["na"] + ")"
    return text if len(text) <= CELL else text[:CELL - 4] + "...)"


def ratio(a, b):
    va = a.get("stats", {}).get("median") if "stats" in a else a.get("value")
    vb = b.get("stats", {}).get("median") if "stats" in b else b.get("value")
    if va is None or vb in (None, 0):
        return None
    return va / vb


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "target/bench"
    meta = {}
    try:
        with open(os.path.join(out, "meta.json")) as f:
            meta = json.load(f)
    except (OSError, json.JSONDecodeError):
        pass
    n = meta.get("n", "?")
    k = meta.get("k", "?")
    sections = []
    all_errors = []

    def add(title, per_runtime, notes=()):
        sections.append({"title": title, "notes": list(notes), "rows": per_runtime})

    pod = {}
    cont = {}
    mem = {}
    crit = {}
    for rt in RUNTIMES:
        pod[rt], e1 = podbench_section(out, rt, "pod", POD_OPS, POD_SUMS)
        cont[rt], e2 = podbench_section(out, rt, "container", CONTAINER_OPS, CONTAINER_SUMS)
        mem[rt], e3 = mem_section(out, rt)
        crit[rt], e4 = critest_section(out, rt)
        for e in e1 + e2 + e3:
            all_errors.append(dict(e, runtime=rt))
        all_errors.extend(e4)

    add(f"Pod lifecycle: RunPodSandbox -> StopPodSandbox -> RemovePodSandbox (N={n}, podbench over gRPC)", pod,
        ["containerd also starts (and stops) a pause container per pod; krio starts none "
         "(no infra process unless the pod shares its PID namespace)."])
    add(f"Container lifecycle: busybox `sleep 3600` in a fresh pod (N={n}; StopContainer timeout "
        f"{meta.get('stop_timeout', 0)} s: sleep as PID 1 ignores SIGTERM)", cont)
    add(f"Memory with K={k} pods of one running container each (VmRSS)", mem,
        [f"helpers: krio-monitor (krio) vs containerd-shim-runc-v2 (containerd); "
         f"containerd's figure excludes its {k} pause processes."])
    add(f"critest -benchmark (cri-tools v1.37.0, N={n} per benchmark)", crit)

    # Print.
    width = max(len(op) for s in sections for op in s["rows"]["krio"].keys()) + 2
    print()
    for s in sections:
        print("== " + s["title"])
        for note in s["notes"]:
            print("   note: " + note)
        ops = list(s["rows"]["krio"].keys())
        for op in s["rows"]["containerd"].keys():
            if op not in ops:
                ops.append(op)
        for op in ops:
            a = s["rows"]["krio"].get(op, {"na": "not run"})
            b = s["rows"]["containerd"].get(op, {"na": "not run"})
            r = ratio(a, b)
            rs = f"{r:.2f}" if r is not None else "-"
            print(f"{op:<{width}}krio {cell(a):<{CELL}}  containerd {cell(b):<{CELL}}  ratio {rs}")
        print()
    if all_errors:
        print("== Errors (first per benchmark; full messages in bench.json)")
        seen = set()
        for e in all_errors:
            msg = " ".join((e.get("error") or "").split())
            if "rpc error:" in msg:  # drop gomega's dump of the status struct
                msg = msg[msg.index("rpc error:"):].split(" {")[0]
            line = f"   {e.get('runtime')}: {e.get('op', '')}: {msg[:240]}"
            if line not in seen:
                seen.add(line)
                print(line)
        print()

    result = {"meta": meta, "sections": sections, "errors": all_errors}
    with open(os.path.join(out, "bench.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(f"written: {os.path.join(out, 'bench.json')}")
    reference_broken = any(e.get("runtime") == "containerd" and not str(e.get("op", "")).startswith("critest")
                           for e in all_errors)
    return 1 if reference_broken else 0


if __name__ == "__main__":
    sys.exit(main())
