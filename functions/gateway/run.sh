#!/bin/bash
# Streaming mode entry point. The Lambda Web Adapter layer (AWS_LAMBDA_EXEC_WRAPPER=/opt/bootstrap)
# execs this file as the function's handler, waits until GET $AWS_LWA_READINESS_CHECK_PATH
# answers on 127.0.0.1:$PORT, then turns each invocation into an HTTP request to uvicorn.
# /opt/python is the gateway layer; $LAMBDA_RUNTIME_DIR provides the runtime's boto3.
PATH=$PATH:$LAMBDA_TASK_ROOT/bin \
PYTHONPATH=/opt/python:$LAMBDA_RUNTIME_DIR:$LAMBDA_TASK_ROOT \
exec python -m uvicorn --host 127.0.0.1 --port="${PORT:-8080}" \
    --loop uvloop --http httptools --no-access-log --no-server-header app:app
