"""The learned coder saved in the run directory: learn_model/model.joblib (the fitted
scikit-learn estimators, one per role group, with the TF-IDF vectorizers as words_ / unit_words_,
the embedding blocks' principal components as projection_, the role groups' class patterns as
group_patterns_ and, for a multi-code model, each code's threshold as thresholds_) next to
learn_model/model.json (format version, package versions, feature set, classes, parameters, the
encoder choice and the hashes of what it was trained on), and learn_model/encoder/ when learn kept a
fine-tuned sentence model (a sentence-transformers folder: load it with SentenceTransformer(path)).

joblib files run code when loaded: load only models from run directories you made.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np

from pipeline.errors import InputError
from pipeline.learn_features import FEATURE_SETS
from pipeline.settings import LearnSettings

FORMAT_VERSION = 3  # 3: multi-code models (multi_code, skip, thresholds_), group_patterns_, the tuned encoder


def _versions() -> dict[str, str]:
    import sklearn

    return {"scikit-learn": sklearn.__version__, "numpy": np.__version__}


def save_model(model_dir: Path, result, framework, encoder, s: LearnSettings, human_sha256: str) -> dict:
    """Write model.joblib + model.json atomically (a fresh folder renamed into place)."""
    import joblib

    model_dir = Path(model_dir)
    t = result.targets
    info = {
        "format_version": FORMAT_VERSION,
        "versions": _versions(),
        "estimator": "pipeline.learn.TurnPooledLogit (sklearn LogisticRegression, lbfgs, one per role group; "
        "PCA of the embedding blocks as projection_)",
        "level": t.level,
        "feature_set": result.feature_set,
        "blocks": list(FEATURE_SETS[result.feature_set]),
        "n_features": int(result.model.n_features_in_),
        "role_groups": len(result.model.models_),
        "components": (
            int(result.model.projection_.pca.n_components_)
            if getattr(result.model, "projection_", None) is not None and result.model.projection_.pca is not None
            else None
        ),
        "words_vocabulary": (
            len(result.model.words_.vocabulary_) if getattr(result.model, "words_", None) is not None else None
        ),
        "classes": t.classes,
        "class_dimension": t.class_dimension,
        "class_concept": t.class_concept,
        "parameters": {
            "c": result.model.c,
            "turn_pooling": result.model.turn_pooling,
            "seed": result.model.seed,
            "balance_classes": result.model.balance_classes,
            "framework_weight": s.framework_weight,
            "components": s.components,
        },
        "embedding_model": encoder.model_id,
        "framework": {"name": framework.name, "sha256": framework.sha256},
        "human_codes_sha256": human_sha256,
        "coders": t.coders,
        "cross_validation_score": result.scores,
        "multi_code": bool(t.multi_code),
        "unlearned_classes": t.unlearned,
        "thresholds": (
            np.round(result.model.thresholds_, 4).tolist()
            if getattr(result.model, "thresholds_", None) is not None
            else None
        ),
        "encoder": _encoder_info(result, encoder),
    }
    tmp = model_dir.parent / f".{model_dir.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    joblib.dump(result.model, tmp / "model.joblib")
    choice = result.encoder_choice
    if choice is not None and choice.kept == "finetune":
        choice.tuned.model.save(str(tmp / "encoder"))
    (tmp / "model.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    shutil.rmtree(model_dir, ignore_errors=True)
    tmp.rename(model_dir)
    return {
        "path": str(model_dir),
        "format_version": FORMAT_VERSION,
        "feature_set": result.feature_set,
        "n_features": info["n_features"],
        "versions": info["versions"],
    }


def _encoder_info(result, encoder) -> dict:
    choice = result.encoder_choice
    if choice is None:
        return {"kept": "frozen", "model_id": encoder.model_id}
    info = {"kept": choice.kept, "reason": choice.reason, "base_model_id": encoder.model_id}
    if choice.kept == "finetune":
        info.update(
            model_id=choice.tuned.model_id,
            path="encoder",
            # the saved encoder's own tuning: on every coded unit where learn tuned again, else the comparison's
            finetune={k: getattr(choice.final or choice.report, k) for k in ("units", "draws", "seconds", "device")},
        )
    return info


def load_model(model_dir: Path):
    """(estimator, model.json contents); a warning when the packages differ from the saving ones."""
    import joblib

    model_dir = Path(model_dir)
    meta_path = model_dir / "model.json"
    if not meta_path.is_file() or not (model_dir / "model.joblib").is_file():
        raise InputError("no learned model here; run `themeshift learn RUN --human FILE` first", model_dir)
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("format_version") != FORMAT_VERSION:
        raise InputError(
            f"model format {meta.get('format_version')} is not {FORMAT_VERSION}; run `themeshift learn` again",
            meta_path,
        )
    if meta.get("versions") != _versions():
        warnings.warn(
            f"{model_dir}: saved with {meta.get('versions')}, loading with {_versions()}; "
            "probabilities may differ slightly",
            stacklevel=2,
        )
    return joblib.load(model_dir / "model.joblib"), meta
