"""What a test gives iam-admin and the service to run on DynamoDB and Secrets Manager at a local
DynamoDB-compatible endpoint: tables and secrets named for one run (nothing is deleted
afterwards; the endpoint's server goes with the test run), and argon2 parameters cheap enough
for a test."""

import secrets


def dynamodb_deployment(prefix, endpoint):
    run = f"{prefix}-{secrets.token_hex(4)}"
    return {
        "IAM_PRINCIPALS_TABLE": f"{run}-principals",
        "IAM_CREDENTIALS_TABLE": f"{run}-credentials",
        "IAM_AUDIT_TABLE": f"{run}-audit",
        "IAM_SIGNING_SECRET_ID": f"{run}-signing-key",
        "IAM_SIGNING_PUBLIC_KEYS_SECRET_ID": f"{run}-signing-public-keys",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "IAM_ARGON2_MEMORY_KIB": "8",
        "IAM_ARGON2_ITERATIONS": "1",
        "IAM_ARGON2_PARALLELISM": "1",
    }
