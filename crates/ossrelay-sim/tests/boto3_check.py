#!/usr/bin/env python3
"""MANUAL CHECK, not run by cargo: drives `ossrelay sim --dialect s3` with boto3 (1.43.x).

Start the simulator first, e.g.
  ossrelay sim --dialect s3 --listen 127.0.0.1:9400 --account a:AKIDEXAMPLE:secret \
      --bucket bkt --aws-role a:reader:external_id=ext123 --imds-role a:vm \
      --synthetic bkt/disk.raw=64MiB --web-identity-token tok123
then run: python3 boto3_check.py http://127.0.0.1:9400 <ec2_endpoint from the ready line>
"""
import base64
import hashlib
import json
import os
import sys
import tempfile
import urllib.request

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

ep, ec2 = sys.argv[1], sys.argv[2]
cfg = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1})
s3 = boto3.client("s3", endpoint_url=ep, region_name="us-east-1",
                  aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret", config=cfg)
results = []


def check(name, fn):
    try:
        out = fn()
        results.append((name, "ok", out))
    except Exception as e:  # noqa: BLE001 - report every failure and go on
        results.append((name, "FAIL", repr(e)))


data = os.urandom(1 << 20)
check("put_object", lambda: s3.put_object(Bucket="bkt", Key="a/b.txt", Body=data)["ETag"])


def get_range():
    r = s3.get_object(Bucket="bkt", Key="a/b.txt", Range="bytes=10-19")
    body = r["Body"].read()
    assert body == data[10:20], "range bytes differ"
    return r["ContentRange"]


check("get_object Range", get_range)


def head_checksum():
    r = s3.head_object(Bucket="bkt", Key="a/b.txt", ChecksumMode="ENABLED")
    return r.get("ChecksumCRC64NVME"), r.get("ChecksumType")


check("head_object ChecksumMode", head_checksum)
check("head synthetic", lambda: s3.head_object(Bucket="bkt", Key="disk.raw",
                                               ChecksumMode="ENABLED").get("ChecksumCRC64NVME"))


def upload_file():
    with tempfile.NamedTemporaryFile(delete=False) as f:
        big = os.urandom(20 << 20)
        f.write(big)
    s3.upload_file(f.name, "bkt", "big.bin",
                   Config=TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20))
    got = s3.get_object(Bucket="bkt", Key="big.bin")
    assert hashlib.md5(got["Body"].read()).hexdigest() == hashlib.md5(big).hexdigest()
    h = s3.head_object(Bucket="bkt", Key="big.bin", ChecksumMode="ENABLED")
    return h["ETag"], h.get("ChecksumCRC64NVME"), h.get("ChecksumType")


check("upload_file 20 MiB (multipart, aws-chunked trailers)", upload_file)


def mpu_listing_and_abort():
    up = s3.create_multipart_upload(Bucket="bkt", Key="mp.bin", ChecksumAlgorithm="CRC64NVME",
                                    ChecksumType="FULL_OBJECT")
    uid = up["UploadId"]
    # boto3 needs awscrt to compute CRC64NVME itself; the parts go with its default CRC32
    # trailer and the simulator still returns each part's CRC64NVME (the upload named it).
    for n in (1, 2, 3):
        s3.upload_part(Bucket="bkt", Key="mp.bin", UploadId=uid, PartNumber=n,
                       Body=b"x" * (5 << 20))
    p1 = s3.list_parts(Bucket="bkt", Key="mp.bin", UploadId=uid, MaxParts=2)
    p2 = s3.list_parts(Bucket="bkt", Key="mp.bin", UploadId=uid,
                       PartNumberMarker=p1["NextPartNumberMarker"])
    ups = s3.list_multipart_uploads(Bucket="bkt", Prefix="mp")
    s3.abort_multipart_upload(Bucket="bkt", Key="mp.bin", UploadId=uid)
    after = s3.list_multipart_uploads(Bucket="bkt", Prefix="mp")
    return {
        "page1": [p["PartNumber"] for p in p1["Parts"]], "truncated": p1["IsTruncated"],
        "page2": [p["PartNumber"] for p in p2["Parts"]],
        "part1_crc": p1["Parts"][0].get("ChecksumCRC64NVME"),
        "uploads": [u["Key"] for u in ups.get("Uploads", [])],
        "after_abort": len(after.get("Uploads", [])),
    }


check("list_parts / list_multipart_uploads / abort", mpu_listing_and_abort)


def presigned():
    # boto3 presigns with SigV2 unless told s3v4; the simulator verifies SigV4 only.
    v4 = boto3.client("s3", endpoint_url=ep, region_name="us-east-1",
                      aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret",
                      config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
    url = v4.generate_presigned_url("get_object", Params={"Bucket": "bkt", "Key": "a/b.txt"},
                                    ExpiresIn=300)
    body = urllib.request.urlopen(url).read()
    assert body == data
    return len(body)


check("presigned GET via urllib", presigned)


def sts():
    c = boto3.client("sts", endpoint_url=ec2, region_name="us-east-1",
                     aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret")
    r = c.assume_role(RoleArn="arn:aws:iam::a:role/reader", RoleSessionName="check",
                      ExternalId="ext123", DurationSeconds=900)
    cr = r["Credentials"]
    t = boto3.client("s3", endpoint_url=ep, region_name="us-east-1", config=cfg,
                     aws_access_key_id=cr["AccessKeyId"], aws_secret_access_key=cr["SecretAccessKey"],
                     aws_session_token=cr["SessionToken"])
    n = len(t.get_object(Bucket="bkt", Key="a/b.txt")["Body"].read())
    who = boto3.client("sts", endpoint_url=ec2, region_name="us-east-1",
                       aws_access_key_id=cr["AccessKeyId"], aws_secret_access_key=cr["SecretAccessKey"],
                       aws_session_token=cr["SessionToken"]).get_caller_identity()
    return cr["AccessKeyId"][:4], n, who["Arn"]


check("sts assume_role + temp creds on S3", sts)


def web_identity():
    c = boto3.client("sts", endpoint_url=ec2, region_name="us-east-1",
                     aws_access_key_id="x", aws_secret_access_key="x")
    r = c.assume_role_with_web_identity(RoleArn="arn:aws:iam::a:role/reader",
                                        RoleSessionName="wi", WebIdentityToken="tok123")
    try:
        c.assume_role_with_web_identity(RoleArn="arn:aws:iam::a:role/reader",
                                        RoleSessionName="wi", WebIdentityToken="nope")
        bad = "accepted"
    except ClientError as e:
        bad = e.response["Error"]["Code"]
    return r["Credentials"]["AccessKeyId"][:4], bad


check("sts assume_role_with_web_identity", web_identity)


def wrong_secret():
    bad = boto3.client("s3", endpoint_url=ep, region_name="us-east-1", config=cfg,
                       aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="wrong")
    try:
        bad.get_object(Bucket="bkt", Key="a/b.txt")
    except ClientError as e:
        return e.response["Error"]["Code"], "StringToSign" in e.response["Error"]
    raise AssertionError("no error")


check("wrong secret", wrong_secret)


def imds():
    req = urllib.request.Request(ep + "/latest/api/token", method="PUT",
                                 headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
    tok = urllib.request.urlopen(req).read().decode()
    h = {"X-aws-ec2-metadata-token": tok}
    role = urllib.request.urlopen(urllib.request.Request(
        ep + "/latest/meta-data/iam/security-credentials/", headers=h)).read().decode()
    doc = json.loads(urllib.request.urlopen(urllib.request.Request(
        ep + "/latest/meta-data/iam/security-credentials/" + role, headers=h)).read())
    return role, doc["Code"], doc["AccessKeyId"][:4]


check("IMDSv2", imds)


def content_md5_bad():
    try:
        s3.put_object(Bucket="bkt", Key="m", Body=b"abc",
                      ContentMD5=base64.b64encode(hashlib.md5(b"abd").digest()).decode())
    except ClientError as e:
        return e.response["Error"]["Code"]
    raise AssertionError("accepted")


check("bad Content-MD5", content_md5_bad)

for name, status, out in results:
    print(f"{status:4} {name}: {out}")
sys.exit(0 if all(s == "ok" for _, s, _ in results) else 1)
