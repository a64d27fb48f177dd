"""A module object registered under two names (shared by two parents)."""

from __future__ import annotations

import torch


class _AliasShared(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.l = torch.nn.Linear(8, 8)

    def forward(self, x):
        return torch.tanh(self.l(x))


class _AliasParentA(torch.nn.Module):
    def __init__(self, shared):
        super().__init__()
        self.s, self.own = shared, torch.nn.Linear(8, 8)

    def forward(self, x):
        return self.s(self.own(x)) * 2


class _AliasParentB(torch.nn.Module):
    def __init__(self, shared):
        super().__init__()
        self.inner = shared  # the same object as ParentA's ``s``: one tag, ParentA's

    def forward(self, x):
        return self.inner(x) + 1


class _TwoParents(torch.nn.Module):
    def __init__(self):
        super().__init__()
        shared = _AliasShared()
        self.pa, self.pb = _AliasParentA(shared), _AliasParentB(shared)

    def forward(self, x):
        return self.pb(self.pa(x))


def two_parents():
    """ParentA and ParentB hold one ``_AliasShared`` object (``pa.s`` and ``pb.inner``)."""
    torch.manual_seed(0)
    return _TwoParents().eval(), (torch.randn(2, 8),)
