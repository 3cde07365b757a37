"""The local OSCAR's object storage: per-user keys from /system/config, one user's keys unable to
reach another's bucket, presigned URLs checked (signature, expiry, object), no anonymous access.
Real HTTP on loopback, the real S3 server (moto behind our signature gate); no Slurm."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

pytestmark = pytest.mark.e2e


def s3_client(provider):
    return boto3.client(
        "s3",
        endpoint_url=provider["endpoint"],
        aws_access_key_id=provider["access_key"],
        aws_secret_access_key=provider["secret_key"],
        region_name=provider["region"],
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


def user_provider(local_oscar, user):
    with local_oscar.user_client(user) as client:
        return client.get("/system/config").raise_for_status().json()["minio_provider"]


def user_bucket(local_oscar, user, name):
    with local_oscar.user_client(user) as client:
        response = client.post("/system/buckets", json={"bucket_name": name})
        assert response.status_code in (201, 400), response.text
        mine = [b["bucket_name"] for b in client.get("/system/buckets").json()]
    assert name in mine
    return name


def fetch(url, method="GET", data=None):
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_each_user_gets_own_keys_and_the_admin_the_admins(local_oscar):
    alice, bob = user_provider(local_oscar, "alice"), user_provider(local_oscar, "bob")
    admin = httpx_admin_config(local_oscar)["minio_provider"]
    assert alice["endpoint"].startswith("http://127.0.0.1:")
    keys = {alice["access_key"], bob["access_key"], admin["access_key"]}
    assert len(keys) == 3 and all(keys)
    assert user_provider(local_oscar, "alice")["access_key"] == alice["access_key"]


def httpx_admin_config(local_oscar):
    import httpx

    auth = (local_oscar.user, local_oscar.password)
    return httpx.get(f"{local_oscar.endpoint}/system/config", auth=auth).raise_for_status().json()


def test_bob_cannot_list_read_write_or_delete_alices_objects(local_oscar):
    bucket = user_bucket(local_oscar, "alice", "iso-alice-test")
    alice = s3_client(user_provider(local_oscar, "alice"))
    bob = s3_client(user_provider(local_oscar, "bob"))
    alice.put_object(Bucket=bucket, Key="jobs/x/in", Body=b"alice's data")
    assert alice.get_object(Bucket=bucket, Key="jobs/x/in")["Body"].read() == b"alice's data"
    for attempt in (
        lambda: bob.list_objects_v2(Bucket=bucket),
        lambda: bob.get_object(Bucket=bucket, Key="jobs/x/in"),
        lambda: bob.head_object(Bucket=bucket, Key="jobs/x/in"),
        lambda: bob.put_object(Bucket=bucket, Key="jobs/x/in", Body=b"bob"),
        lambda: bob.delete_object(Bucket=bucket, Key="jobs/x/in"),
        lambda: bob.list_buckets(),
    ):
        with pytest.raises(ClientError) as refused:
            attempt()
        assert refused.value.response["Error"]["Code"] in ("AccessDenied", "403")
    # bob's own presigned URL for alice's object is refused too (his key has no right to it)
    url = bob.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "jobs/x/in"}, ExpiresIn=60
    )
    assert fetch(url)[0] == 403
    assert alice.get_object(Bucket=bucket, Key="jobs/x/in")["Body"].read() == b"alice's data"
    with local_oscar.user_client("bob") as client:
        assert bucket not in [b["bucket_name"] for b in client.get("/system/buckets").json()]
        taken = client.post("/system/buckets", json={"bucket_name": bucket})
        assert taken.status_code == 400 and "already exists" in taken.text


def test_presigned_urls_reach_exactly_their_object_until_they_expire(local_oscar):
    bucket = user_bucket(local_oscar, "alice", "presign-alice-test")
    alice = s3_client(user_provider(local_oscar, "alice"))
    alice.put_object(Bucket=bucket, Key="a", Body=b"A")
    alice.put_object(Bucket=bucket, Key="b", Body=b"B")
    get_a = alice.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "a"}, ExpiresIn=60
    )
    assert fetch(get_a) == (200, b"A")
    assert fetch(get_a.replace("/a?", "/b?"))[0] == 403  # another object
    assert fetch(get_a, "PUT", b"x")[0] == 403  # another method
    assert fetch(get_a[:-4] + "0000")[0] == 403  # altered signature
    put_c = alice.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "c"}, ExpiresIn=60
    )
    assert fetch(put_c, "PUT", b"C" * 100000)[0] == 200
    assert alice.get_object(Bucket=bucket, Key="c")["Body"].read() == b"C" * 100000
    short = alice.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "a"}, ExpiresIn=1
    )
    time.sleep(2.1)
    assert fetch(short)[0] == 403


def test_no_anonymous_access_and_no_moto_api(local_oscar):
    bucket = user_bucket(local_oscar, "alice", "anon-alice-test")
    alice = s3_client(user_provider(local_oscar, "alice"))
    alice.put_object(Bucket=bucket, Key="a", Body=b"A")
    endpoint = user_provider(local_oscar, "alice")["endpoint"]
    assert fetch(f"{endpoint}/{bucket}/a")[0] == 403
    assert fetch(f"{endpoint}/{bucket}/new", "PUT", b"x")[0] == 403
    assert fetch(f"{endpoint}/{bucket}")[0] == 403
    assert fetch(f"{endpoint}/moto-api/data.json")[0] == 403
    assert fetch(f"{endpoint}/moto-api/reset-auth", "POST", b"100")[0] == 403
