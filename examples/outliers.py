"""The seed's intuition: weight decay damps the updates a few far outliers drive.

A curve, sin(x) plus noise, is fitted by a linear model on 16 Gaussian bumps; three
far outliers are then added. The model is fitted with Adam and no decay, with L2
(``wdchain.adam(weight_decay=λ)``) and with decoupled decay (``wdchain.adamw``), each
once on the clean points and once with the outliers. The outliers' large errors give
large gradients and pull the weights; the printed table shows how far (‖Δθ‖, the
change of the final weights they cause, and the fit's shift at the outliers) and how
much each kind of decay damps that pull. The PNG shows the fits and the weight norm
over the steps. The bias is not decayed (``mask``).

Run: ``python examples/outliers.py`` (writes outliers.png)
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from matplotlib.figure import Figure

import wdchain

NUM_STEPS = 1500
LEARNING_RATE = 0.05
WEIGHT_DECAY = 0.05
CENTRES = np.linspace(-3, 3, 16)
OUTLIERS_X = np.array([-1.5, 0.3, 2.1])
OUTLIERS_Y = 6.0
MASK = {"w": True, "b": False}


def features(x):
    return jnp.exp(-((x[:, None] - CENTRES) ** 2) / (2 * 0.5**2))


def predict(params, x):
    return features(x) @ params["w"] + params["b"]


def fit(tx, x, y, num_steps):
    """Full-batch training; the final params and ‖w‖ after every step."""

    def step(carry, _):
        params, state = carry
        grads = jax.grad(lambda p: jnp.mean((predict(p, x) - y) ** 2))(params)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        return (params, state), jnp.linalg.norm(params["w"])

    params = {"w": jnp.zeros(len(CENTRES)), "b": jnp.zeros([])}
    (params, _), norms = jax.lax.scan(step, (params, tx.init(params)), length=num_steps)
    return params, np.asarray(norms)


def main(num_steps=NUM_STEPS, out="outliers.png"):
    """Fits the three arms with and without outliers; returns the table's rows."""
    rng = np.random.default_rng(0)
    x = np.linspace(-3, 3, 40)
    y = np.sin(x) + 0.1 * rng.standard_normal(x.shape)
    x_all = np.concatenate([x, OUTLIERS_X])
    y_all = np.concatenate([y, np.full(OUTLIERS_X.shape, OUTLIERS_Y)])
    arms = {
        "no decay": wdchain.adam(LEARNING_RATE),
        "L2 (adam)": wdchain.adam(LEARNING_RATE, weight_decay=WEIGHT_DECAY, mask=MASK),
        "decoupled (adamw)": wdchain.adamw(LEARNING_RATE, weight_decay=WEIGHT_DECAY, mask=MASK),
    }
    grid = np.linspace(-3, 3, 200)
    figure = Figure(figsize=(11, 4), layout="constrained")
    fits, norms = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    fits.scatter(x, y, s=10, color="gray", label="data")
    fits.scatter(OUTLIERS_X, np.full(3, OUTLIERS_Y), color="red", label="outliers")
    rows = {}
    for name, tx in arms.items():
        clean, _ = fit(tx, x, y, num_steps)
        pulled, norm = fit(tx, x_all, y_all, num_steps)
        shift = predict(pulled, OUTLIERS_X) - predict(clean, OUTLIERS_X)
        pull = float(jnp.linalg.norm(pulled["w"] - clean["w"]))
        rows[name] = {"norm": float(norm[-1]), "pull": pull, "shift": float(jnp.mean(shift))}
        fits.plot(grid, predict(pulled, grid), label=name)
        norms.plot(np.arange(1, num_steps + 1), norm, label=name)
    fits.set(title=f"fits with outliers (λ={WEIGHT_DECAY})", xlabel="x", ylabel="y")
    norms.set(title="‖w‖ over steps (with outliers)", xlabel="step", ylabel="‖w‖")
    fits.legend()
    norms.legend()
    figure.savefig(out, dpi=100)

    print(f"{'arm':<18} {'‖w‖':>6} {'outlier pull ‖Δw‖':>18} {'fit shift at outliers':>22} "
          f"{'damped':>7}")
    for name, row in rows.items():
        row["damped"] = 1 - row["pull"] / rows["no decay"]["pull"]
        print(f"{name:<18} {row['norm']:6.2f} {row['pull']:18.3f} {row['shift']:22.3f} "
              f"{row['damped']:7.0%}")
    print(f"wrote {out}")
    return rows


if __name__ == "__main__":
    main()
