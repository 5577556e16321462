"""python -m kernels.cuda --ptx sm_80,sm_90 [--out DIR] [--json]: compile every kernel to PTX.

python -m kernels.cuda --sass sm_80,sm_90 [--json]: assemble every kernel with ptxas and print its
registers, spills, shared memory and theoretical occupancy at minicnn's launch configuration,
and (nvdisasm) its SASS hot loop's instruction mix; --json prints all of it as data.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from kernels.cuda.ptx import compile_all, parse_cc, uses_local_memory


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kernels.cuda", description=__doc__)
    parser.add_argument("--ptx", help="comma-separated targets, e.g. sm_80,sm_90")
    parser.add_argument("--sass", help="comma-separated targets: ptxas resources and occupancy")
    parser.add_argument("--out", help="write DIR/<target>/<kernel>.ptx")
    parser.add_argument("--json", action="store_true",
                        help="print JSON: {target: {kernel: ptx}}, or with --sass the resource records")
    args = parser.parse_args(argv)
    if not args.ptx and not args.sass:
        parser.error("give --ptx and/or --sass (comma-separated targets, e.g. sm_80,sm_90)")
    if args.sass and args.ptx and args.json:
        parser.error("--json prints one result: give --ptx or --sass with it, not both")
    if args.sass:
        from kernels.cuda.resources import assemble_all, records, report
        targets = ["sm_{}{}".format(*parse_cc(t.strip())) for t in args.sass.split(",")]
        assembled = {t: assemble_all(t) for t in targets}
        print(json.dumps(records(assembled), indent=1) if args.json else "\n".join(report(assembled)))
        if not args.ptx:
            return 0
    results = {}
    for target in args.ptx.split(","):
        major, minor = parse_cc(target.strip())
        results[f"sm_{major}{minor}"] = compile_all((major, minor))
    if args.json:
        json.dump(results, sys.stdout)
        return 0
    for target, kernels in results.items():
        for name, ptx in kernels.items():
            note = "  (uses local memory)" if uses_local_memory(ptx) else ""
            print(f"{target}  {name:34s} {len(ptx.splitlines()):6d} lines{note}")
            if args.out:
                os.makedirs(os.path.join(args.out, target), exist_ok=True)
                with open(os.path.join(args.out, target, f"{name}.ptx"), "w") as f:
                    f.write(ptx)
    return 0


if __name__ == "__main__":
    sys.exit(main())
