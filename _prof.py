import time, torch
torch.set_num_threads(1); torch.set_default_dtype(torch.float64)
from ntkit.lab.experiments.architecture_scores import MLP, _train
from ntkit.metrics import ntk_spectrum, naswot_score, ntk_condition_number
from ntkit.lab.framework import digits_subset
x, y = digits_subset(1200, 0)
for (d,w,a) in [(4,128,"relu"),(2,64,"tanh"),(1,16,"relu")]:
    m = MLP(64, d, w, a, False, 1.0, 0)
    t=time.time(); ntk_spectrum(m, x[:24]); t1=time.time()-t
    t=time.time(); naswot_score(m, x[:64]) if a=="relu" else None; t2=time.time()-t
    t=time.time(); _train(m, x[:600], y[:600], 60, 0.02, 64, torch.Generator().manual_seed(0)); t3=time.time()-t
    print(d,w,a, f"ntk {t1:.3f} naswot {t2:.3f} train {t3:.3f}")
