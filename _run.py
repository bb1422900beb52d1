import sys, time, ntkit.lab as lab
t=time.time()
r = lab.run("architecture_scores", quick=(sys.argv[1]=="quick"), seed=0, out="/tmp/runs_scores", progress=False, threads=1)
print(time.time()-t); print(r.summary); print(r.claims_table())
import json
t = r.tables["architectures"]
for i in range(len(t["depth"])): print({k: t[k][i] for k in t})
