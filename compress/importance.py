"""Channel importance from the data: how much the model's output moves when a channel group is removed.

Weight magnitude (l1/l2) ranks channels by their own weights, blind to what flows through them: in a
sentence encoder it keeps large-weight heads that the data barely uses and removes ones it relies on.
`output` importance estimates, to first order, the change in the model's outputs when the whole group
(every coupled layer's slice, biases and norm scales included) is zeroed: for a random direction r,
d(r . f)/dw summed with the weights over the group is r . (change of f), and its square averaged over
directions and batches is the squared change of the outputs. No labels are needed, and an attention
head is scored as one unit (its channels summed before squaring), so whole heads compare fairly.
"""
from __future__ import annotations


def _out_axis(module) -> int:
    import torch

    transposed = isinstance(module, (torch.nn.modules.conv._ConvTransposeNd, torch.nn.Embedding))
    return 1 if transposed else 0


def _sum_except(tensor, axis: int):
    dims = [dim for dim in range(tensor.dim()) if dim != axis]
    return tensor.sum(dim=dims) if dims else tensor


def _removal_effects(module) -> tuple | None:
    """(per out-channel, per in-channel) sums of weight x gradient for this module's last backward pass."""
    weight = getattr(module, "weight", None)
    if weight is None or getattr(weight, "grad", None) is None:
        return None
    product = (weight * weight.grad).detach()
    axis = _out_axis(module)
    out = _sum_except(product, axis) if product.dim() > 1 else product.clone()
    bias = getattr(module, "bias", None)
    if bias is not None and bias.grad is not None and bias.shape == out.shape:
        out = out + (bias * bias.grad).detach()
    within = _sum_except(product, 1 - axis) if product.dim() > 1 else None
    return out, within


class OutputImportance:
    """A torch-pruning importance: the mean squared first-order change of the outputs when a group goes.

    `collect(model, batches)` runs backward passes of random projections of the outputs; the pruner
    then calls the object on each group. `heads` maps attention projections to their head counts.
    """

    def __init__(self, heads: dict | None = None, projections: int = 2, logits: bool = False):
        self.heads = dict(heads or {})
        self.projections = projections
        self.logits = logits    # class logits (last axis): directions are the model's own sampled classes
        self.out_effects: dict = {}
        self.in_effects: dict = {}

    def collect(self, model, batches: list, device=None) -> None:
        import torch

        from edgeslim.core.axes import flat_outputs
        from edgeslim.core.model_io import run_model

        generator = torch.Generator().manual_seed(0)
        modules = [module for module in model.modules() if isinstance(getattr(module, "weight", None), torch.Tensor)]
        was_training = model.training
        model.eval()
        try:
            for inputs in batches:
                for _ in range(self.projections):
                    model.zero_grad(set_to_none=True)
                    with torch.enable_grad():
                        outputs = flat_outputs(run_model(model, inputs, device))
                        projected = sum(self._projected(out, generator) for out in outputs
                                        if torch.is_tensor(out) and out.is_floating_point() and out.requires_grad)
                    if not torch.is_tensor(projected):
                        return
                    projected.backward()
                    self._keep(modules)
        finally:
            model.zero_grad(set_to_none=True)
            model.train(was_training)

    def _projected(self, output, generator):
        """r . output for a random direction r: Gaussian for embeddings and features; for class logits the
        log-probability of a class drawn from the model's own distribution (its Fisher information)."""
        import torch

        if not self.logits:
            return (output * torch.randn(output.shape, generator=generator)).sum()
        log_probs = torch.log_softmax(output.reshape(-1, output.shape[-1]), dim=-1)
        drawn = torch.multinomial(log_probs.detach().exp(), 1, generator=generator)
        return log_probs.gather(1, drawn).sum()

    def _keep(self, modules: list) -> None:
        for module in modules:
            effects = _removal_effects(module)
            if effects is None:
                continue
            self.out_effects.setdefault(module, []).append(effects[0])
            if effects[1] is not None:
                self.in_effects.setdefault(module, []).append(effects[1])

    def __call__(self, group):
        import torch

        total, heads = None, 1
        for index, (dep, idxs) in enumerate(group):
            layer = dep.target.module
            source = self._effects_for(layer, dep.handler)
            if source is None:
                continue
            part = torch.stack(source)[:, torch.as_tensor(idxs, dtype=torch.long)]
            root = torch.as_tensor(group[index].root_idxs, dtype=torch.long)
            if total is None:
                total = torch.zeros(part.shape[0], max(len(group[0].idxs), int(root.max()) + 1))
            total.index_add_(1, root, part)
            heads = max(heads, self.heads.get(layer, 1))
        if total is None or total.shape[1] == 0:
            return None
        return self._score(total, heads)

    def _effects_for(self, layer, handler):
        name = getattr(handler, "__name__", "")
        depthwise = "Depthwise" in type(getattr(handler, "__self__", None)).__name__
        if name == "prune_out_channels" or depthwise:
            return self.out_effects.get(layer)
        if name == "prune_in_channels":
            return self.in_effects.get(layer)
        return None

    @staticmethod
    def _score(total, heads: int):
        """Per channel: the squared change averaged over passes; an attention's channels carry their head's."""
        if heads > 1 and total.shape[1] % heads == 0:
            per_head = total.view(total.shape[0], heads, -1).sum(-1).pow(2).mean(0)
            return per_head.repeat_interleave(total.shape[1] // heads)
        return total.pow(2).mean(0)

