#!/usr/bin/env bash
# The whole test suite from a clean checkout: installs what is missing, builds, runs every test
# (unit tests of each module, end-to-end runs at 1, 2, 3 and more ranks against independent
# goldens), and ends with the line `N passed, N failed`. Exit status 0 only if all passed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
set +e
meson test -C build --print-errorlogs --num-processes 2 "$@"
rc=$?
set -e
python3 - build/meson-logs/testlog.json <<'PY'
import json, sys
passed = failed = skipped = 0
for line in open(sys.argv[1]):
    r = json.loads(line)["result"]
    if r in ("OK", "EXPECTEDFAIL"):
        passed += 1
    elif r == "SKIP":
        skipped += 1
    else:
        failed += 1
print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
PY
exit $rc
