"""The environment the Lambda benchmarks give a function binary: what the Lambda service sets,
pointed at a local Runtime API, with the embedded store under `data_dir` (no network)."""

import os


def lambda_env(runtime_api_port, data_dir):
    return dict(
        os.environ,
        AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{runtime_api_port}",
        AWS_LAMBDA_FUNCTION_NAME="bench",
        AWS_LAMBDA_FUNCTION_MEMORY_SIZE="256",
        AWS_LAMBDA_FUNCTION_VERSION="1",
        AWS_LAMBDA_LOG_GROUP_NAME="bench",
        AWS_LAMBDA_LOG_STREAM_NAME="bench",
        AWS_REGION="eu-west-1",
        IAM_STORE="embedded",
        IAM_DATA_DIR=data_dir,
        IAM_ISSUER="http://bench/iam",
        RUST_LOG="warn",
    )
