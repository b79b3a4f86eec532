"""Run a command, print its wall time and peak memory (this child only) as JSON."""
import json
import resource
import subprocess
import sys
import time

started = time.perf_counter()
rc = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL)
wall = time.perf_counter() - started
peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"rc": rc, "seconds": round(wall, 2), "peak_mib": round(peak_kib / 1024)}))
