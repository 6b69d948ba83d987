"""Today's runtime until issue 22, kept as bench/'s "legacy" contender: MLServer 1.7 + mlserver-mlflow with our
V2 REST fast path (server.py), runtime (runtime.py) and binary tensor codec (binary.py), as they were in
housing_mlops before the move to the KServe SDK. Standalone: it imports nothing of housing_mlops.

It needs its own venv (mlserver pins starlette<0.47, which conflicts with kserve's starlette>=1.3.1):

    python3 -m venv .venv-mlserver
    .venv-mlserver/bin/pip install mlserver==1.7.1 mlserver-mlflow==1.7.1 mlflow==<the lock's> scikit-learn==<...> \
        numpy==<...> pandas==<...> orjson httptools uvloop
    PYTHONPATH=bench:hooks/src MLSERVER_MODEL_NAME=housing-model \
        MLSERVER_MODEL_IMPLEMENTATION=legacy_mlserver.runtime.HousingRuntime MLSERVER_MODEL_URI=DIR \
        MLSERVER_PARALLEL_WORKERS=0 .venv-mlserver/bin/python -m legacy_mlserver.server DIR

(hooks/src on the path only so that the pickled model's housing_mlops.features unpickles.) bench/run.py runs it
with $HOUSING_BENCH_LEGACY_PYTHON as that interpreter and skips the contender, saying so, when it is unset.
"""
