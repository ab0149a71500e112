"""Jordan 2024's (airbench) decoupled SGD hyperparameters, converted to the coupled form of
`cnnjax.train.optim` (L2 decay added to the gradient before Nesterov momentum, the learning rate
multiplying both) on the SUMMED loss (config.optimizer.loss_reduction = "sum").

The paper states a learning rate and a weight decay "per 1,024 examples" that do not change
when the momentum or the batch size does: with momentum m a constant gradient is amplified
1 + 1/(1 - m) times by Nesterov's rule, so the coupled learning rate is
lr / (1024 (1 + 1/(1 - m))), and the decay applied per step is weight_decay x batch / 1024 of
that amplified step (airbench94.py: `kilostep_scale`).
"""

from __future__ import annotations


def decoupled_sgd(lr: float, weight_decay: float, momentum: float, batch_size: int,
                  per_examples: int = 1024) -> dict[str, float]:
    """{"learning_rate", "weight_decay"} for optax SGD with coupled decay on the summed loss."""
    if not 0 <= momentum < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"decoupled_sgd needs 0 <= momentum < 1, batch_size >= 1 and lr > 0, "
                         f"got momentum={momentum}, batch_size={batch_size}, lr={lr}")
    step = per_examples * (1 + 1 / (1 - momentum))
    learning_rate = lr / step
    return {"learning_rate": learning_rate,
            "weight_decay": weight_decay * batch_size / step / learning_rate}
