"""Every MPI call in the program's sources (cmd/, driver/, worker/, io/, linalg/, common/) is checked:
it stands inside CLOQ_MPI(...) or CLOQ_MPI_RC(...) (common/cloq_mpi.h), with three exceptions in
common/cloq_mpi.c itself (MPI_Error_string inside the failure path, whose status it tests;
MPI_Abort, which does not return; nothing else). main sets MPI_ERRORS_RETURN, so the checks can
fire; MPI_Abort and the large-count helpers live in cloq_mpi.c alone.
Usage: python3 tests/mpi_calls.py SOURCE_ROOT"""
import os
import re
import sys

root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
call = re.compile(r"\bMPI_[A-Z][A-Za-z_]*\s*\(")
bad, n = [], 0
for folder in ("cmd", "driver", "worker", "io", "linalg", "common"):
    for name in sorted(os.listdir(os.path.join(root, folder))):
        if not name.endswith((".c", ".h", ".cu")):
            continue
        path = os.path.join(root, folder, name)
        text = open(path, encoding="utf-8").read()
        # drop comments, keeping line numbers
        text = re.sub(r"/\*.*?\*/", lambda m: re.sub(r"[^\n]", " ", m.group(0)), text, flags=re.S)
        text = re.sub(r"//[^\n]*", "", text)
        for m in call.finditer(text):
            fn = m.group(0).rstrip("( \t")
            before = re.sub(r"\s+", "", text[:m.start()])[-16:]
            line = text.count("\n", 0, m.start()) + 1
            where = f"{folder}/{name}:{line}: {fn}"
            if name == "cloq_mpi.c" and fn in ("MPI_Error_string", "MPI_Abort"):
                continue
            if text[:m.start()].rstrip().endswith("#define"):
                continue
            n += 1
            if not (before.endswith("CLOQ_MPI(") or before.endswith("CLOQ_MPI_RC(")):
                bad.append(where)
ok = True
print(f"{n} MPI calls in the program's sources")
for w in bad:
    print(f"FAIL unchecked MPI call: {w}")
    ok = False
main = open(os.path.join(root, "cmd", "main.c"), encoding="utf-8").read()
if "cloq_mpi_errors_return(MPI_COMM_WORLD)" not in main:
    print("FAIL cmd/main.c does not set MPI_ERRORS_RETURN (cloq_mpi_errors_return)")
    ok = False
print("ok   every MPI call is checked" if ok else "some MPI calls are unchecked")
sys.exit(0 if ok else 1)
