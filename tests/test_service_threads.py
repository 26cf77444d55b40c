"""The service holds NumPy's BLAS to one thread (service.one_blas_thread): checked on the BLAS library NumPy
actually loaded, as threadpoolctl finds it in this process."""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from appliance.service import one_blas_thread


def test_numpys_blas_runs_on_one_thread_once_the_service_sets_it():
    blas = [p for p in threadpool_info() if p["user_api"] == "blas"]
    assert blas, "threadpoolctl finds no BLAS under NumPy: the limit would do nothing"
    with threadpool_limits(limits=2, user_api="blas"):
        one_blas_thread()
        assert all(p["num_threads"] == 1 for p in threadpool_info() if p["user_api"] == "blas")
        a = np.ones((64, 64), dtype=np.float32)
        assert float((a @ a)[0, 0]) == 64.0  # products still work on the one thread
