"""``embedkit.compression.tables`` (the old home) is an alias of ``embedkit.tables``."""

import importlib


def test_old_import_paths_are_the_moved_modules():
    import embedkit.tables as new

    old = importlib.import_module("embedkit.compression.tables")
    assert old.__all__ == new.__all__
    assert all(getattr(old, name) is getattr(new, name) for name in new.__all__)
    from embedkit.compression.tables import UnifiedEmbedding, plan_budget
    from embedkit.compression.tables.unified import UnifiedEmbedding as U2
    from embedkit.tables.budget import plan_budget as p2

    assert UnifiedEmbedding is U2 is new.UnifiedEmbedding
    assert plan_budget is p2
    for sub in ("base", "budget", "full", "hashing", "qr", "unified"):
        assert importlib.import_module(f"embedkit.compression.tables.{sub}") is importlib.import_module(f"embedkit.tables.{sub}")
        assert getattr(old, sub) is importlib.import_module(f"embedkit.tables.{sub}")
