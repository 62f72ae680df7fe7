"""Write ``fastxent/data/digits_predictions.parquet``: real test-set predictions of a real model.

The model is a standardised multinomial logistic regression trained on scikit-learn's bundled
``load_digits`` data (1797 8x8 images of the digits 0-9) with a stratified 75/25 split. The file
holds the 450 test rows, sorted by ``row_id``:

=============  ===============================  =============================================
column         type                             content
=============  ===============================  =============================================
``row_id``     int64                            index of the image in ``load_digits()``
``label``      int64                            true digit
``probs``      fixed_size_list<float32>[10]     ``predict_proba``
``logits``     fixed_size_list<float32>[10]     ``decision_function``
``log_probs``  fixed_size_list<float32>[10]     ``predict_log_proba``
=============  ===============================  =============================================

All columns are non-null. The schema metadata key ``fastxent.demo`` holds JSON describing the
dataset, split, model and library versions, and the float64 test log loss and accuracy that
scikit-learn computed before the float32 cast.

Everything is seeded, so the output is deterministic for a given scikit-learn/NumPy/BLAS
(the Parquet footer also records the pyarrow version). Regenerate from the repository root with::

    python scripts/make_demo_data.py

It prints the test log loss and accuracy.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import sklearn
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

OUT = Path(__file__).resolve().parent.parent / "fastxent" / "data" / "digits_predictions.parquet"
METADATA_KEY = b"fastxent.demo"
RANDOM_STATE = 0
TEST_SIZE = 0.25
C_REGULARISATION = 0.1


def _fixed_list(matrix: np.ndarray) -> pa.FixedSizeListArray:
    n_classes = matrix.shape[1]
    flat = pa.array(np.ascontiguousarray(matrix, dtype=np.float32).reshape(-1))
    list_type = pa.list_(pa.field("item", pa.float32(), nullable=False), n_classes)
    return pa.FixedSizeListArray.from_arrays(flat, type=list_type)


def main() -> int:
    digits = load_digits()
    X, y = digits.data, digits.target.astype(np.int64)
    row_id = np.arange(len(y), dtype=np.int64)
    X_train, X_test, y_train, y_test, _, id_test = train_test_split(
        X, y, row_id, test_size=TEST_SIZE, stratify=y, random_state=RANDOM_STATE
    )
    order = np.argsort(id_test)
    X_test, y_test, id_test = X_test[order], y_test[order], id_test[order]

    model = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=C_REGULARISATION, max_iter=5000, random_state=RANDOM_STATE),
    )
    model.fit(X_train, y_train)
    probs = model.predict_proba(X_test)
    logits = model.decision_function(X_test)
    log_probs = model.predict_log_proba(X_test)
    classes = model.classes_
    if not np.array_equal(classes, np.arange(10)):
        raise RuntimeError(f"expected classes 0..9; got {classes}")

    loss = float(log_loss(y_test, probs, labels=classes))
    accuracy = float(accuracy_score(y_test, classes[np.argmax(probs, axis=1)]))

    info = {
        "description": "test-set predictions of a standardised logistic regression on "
        "scikit-learn's load_digits",
        "dataset": "sklearn.datasets.load_digits",
        "n_samples": len(y),
        "n_features": X.shape[1],
        "n_classes": len(classes),
        "split": f"train_test_split(test_size={TEST_SIZE}, stratify=y, "
        f"random_state={RANDOM_STATE})",
        "n_train": len(y_train),
        "n_test": len(y_test),
        "model": repr(model),
        "columns": {
            "row_id": "index in load_digits()",
            "label": "true digit",
            "probs": "predict_proba",
            "logits": "decision_function",
            "log_probs": "predict_log_proba",
        },
        "test_log_loss_float64": loss,
        "test_accuracy": accuracy,
        "sklearn_version": sklearn.__version__,
        "numpy_version": np.__version__,
        "pyarrow_version": pa.__version__,
        "regenerate": "python scripts/make_demo_data.py",
    }
    list_type = pa.list_(pa.field("item", pa.float32(), nullable=False), len(classes))
    schema = pa.schema(
        [
            pa.field("row_id", pa.int64(), nullable=False),
            pa.field("label", pa.int64(), nullable=False),
            pa.field("probs", list_type, nullable=False),
            pa.field("logits", list_type, nullable=False),
            pa.field("log_probs", list_type, nullable=False),
        ],
        metadata={METADATA_KEY: json.dumps(info, sort_keys=True)},
    )
    table = pa.Table.from_arrays(
        [
            pa.array(id_test),
            pa.array(y_test),
            _fixed_list(probs),
            _fixed_list(logits),
            _fixed_list(log_probs),
        ],
        schema=schema,
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_name(OUT.name + ".tmp")
    pq.write_table(
        table,
        tmp,
        use_dictionary=False,
        compression="none",
        write_statistics=["row_id", "label"],
    )
    tmp.replace(OUT)

    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {table.num_rows} rows)")
    print(f"test log loss (sklearn, float64): {loss:.6f}")
    print(f"test accuracy (sklearn):          {accuracy:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
