"""
Lab: the catapult phase
=======================

A lab experiment is a function that measures claims from the theory on real finite
networks and records each as prediction, measurement and tolerance. ``catapult`` checks
the catapult mechanism of Lewkowycz et al. (2020): with learning rate η above 2/λ₀
(λ₀ the initial NTK eigenvalue) but below ~4/λ₀, the loss first grows, the NTK shrinks
until η·λ < 2, and training converges; above that it diverges. Quick mode runs in a few
seconds; ``ntkit lab run catapult`` is the full run.
"""

import tempfile

import matplotlib.image as mpimg
import matplotlib.pyplot as plt

import ntkit.lab as lab

out = tempfile.mkdtemp()
res = lab.run("catapult", quick=True, seed=0, out=out, progress=False, threads=1)
print(res.claims_table())
print(f"{sum(c.holds for c in res.claims)} of {len(res.claims)} claims hold")

# %%
# The experiment's own figures.
for path in res.figures:
    fig, ax = plt.subplots(figsize=(10, 5))
    ax.imshow(mpimg.imread(path))
    ax.set_title(path.name)
    ax.axis("off")
plt.show()
