#!/usr/bin/env python3
"""MANUAL CHECK, not run by cargo: drives the EC2 VM Import/Export and IAM side of
`ossrelay sim --dialect s3` with boto3 (1.43.x), so botocore's own serializers and parsers
(Filter.N vs Filters.N, DiskContainer.N, xxxSet/item lists, URL-encoded IAM documents, EC2's
error XML) are checked against the simulator.

Start the simulator first, e.g.
  ossrelay sim --dialect s3 --listen 127.0.0.1:9410 --region us-west-2 \
      --account 111122223333:AKIDEXAMPLE:secret --account 444455556666:AKIDOTHER:secret2 \
      --bucket exports:111122223333 --bucket b-disks:444455556666 \
      --ec2-image ami-0123456789abcdef0:64MiB:boot=uefi,name=web \
      --vmimport-role 111122223333 --task-seconds 2 \
      --rpc-fault DescribeExportImageTasks:RequestLimitExceeded:503:1
then run: python3 boto3_ec2_check.py <ec2_endpoint from the ready line> <endpoint>
"""
import json
import sys
import time
import urllib.parse
import urllib.request

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

ec2_ep, s3_ep = sys.argv[1], sys.argv[2]
REGION = "us-west-2"
AMI = "ami-0123456789abcdef0"
no_retry = Config(retries={"max_attempts": 1})
with_retry = Config(retries={"max_attempts": 3, "mode": "standard"})


def client(service, ak="AKIDEXAMPLE", sk="secret", region=REGION, config=no_retry, ep=ec2_ep):
    return boto3.client(service, endpoint_url=ep, region_name=region, aws_access_key_id=ak,
                        aws_secret_access_key=sk, config=config)


ec2 = client("ec2")
ec2_b = client("ec2", "AKIDOTHER", "secret2")
iam_b = client("iam", "AKIDOTHER", "secret2", region="us-east-1")
s3_b = client("s3", "AKIDOTHER", "secret2",
              config=Config(s3={"addressing_style": "path"}), ep=s3_ep)
results = []


def check(name, fn):
    try:
        results.append((name, "ok", fn()))
    except Exception as e:  # noqa: BLE001 - report every failure and go on
        results.append((name, "FAIL", repr(e)))


def code_of(fn):
    try:
        fn()
    except ClientError as e:
        return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]
    raise AssertionError("no error")


def describe_images():
    img = ec2.describe_images(ImageIds=[AMI], Owners=["self"])["Images"][0]
    bdm = img["BlockDeviceMappings"][0]
    assert img["BootMode"] == "uefi" and img["PlatformDetails"] == "Linux/UNIX", img
    assert bdm["Ebs"]["VolumeSize"] == 1 and bdm["DeviceName"] == img["RootDeviceName"], bdm
    missing = code_of(lambda: ec2.describe_images(ImageIds=["ami-00000000000000001"]))
    none = ec2.describe_images(Filters=[{"Name": "architecture", "Values": ["arm64"]}])["Images"]
    return img["ImageId"], img["State"], img["Architecture"], missing, len(none)


check("ec2.describe_images", describe_images)


def wait(describe, task_id):
    seen = []
    for _ in range(200):
        t = describe(task_id)
        msg = t.get("StatusMessage")
        if msg and (not seen or seen[-1] != msg):
            seen.append(msg)
        if t["Status"] in ("completed", "deleted"):
            return t, seen
        time.sleep(0.1)
    raise AssertionError(f"{task_id} stuck")


def export_image():
    r = ec2.export_image(ImageId=AMI, DiskImageFormat="RAW", ClientToken="boto-exp-1",
                         S3ExportLocation={"S3Bucket": "exports", "S3Prefix": "vm/"},
                         TagSpecifications=[{"ResourceType": "export-image-task",
                                             "Tags": [{"Key": "k", "Value": "v"}]}])
    tid = r["ExportImageTaskId"]
    again = ec2.export_image(ImageId=AMI, DiskImageFormat="RAW", ClientToken="boto-exp-1",
                             S3ExportLocation={"S3Bucket": "exports", "S3Prefix": "vm/"},
                             TagSpecifications=[{"ResourceType": "export-image-task",
                                                 "Tags": [{"Key": "k", "Value": "v"}]}])
    assert again["ExportImageTaskId"] == tid
    # The first describe meets the scripted RequestLimitExceeded (503); botocore retries it.
    retrying = client("ec2", config=with_retry)

    def describe(i):
        return retrying.describe_export_image_tasks(
            ExportImageTaskIds=[i],
            Filters=[{"Name": "task-state", "Values": ["active", "completed", "deleted"]}],
        )["ExportImageTasks"][0]

    t, seen = wait(describe, tid)
    assert t["Status"] == "completed", t
    head = client("s3", config=Config(s3={"addressing_style": "path"}), ep=s3_ep).head_object(
        Bucket="exports", Key=f"vm/{tid}.raw")
    return tid, r["Status"], r["StatusMessage"], seen, head["ContentLength"], t["Tags"]


check("ec2.export_image + describe_export_image_tasks (503 retried)", export_image)


def iam_and_import():
    code = code_of(lambda: iam_b.get_role(RoleName="vmimport"))
    trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "vmie.amazonaws.com"},
        "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"sts:Externalid": "vmimport"}}}]}
    created = iam_b.create_role(RoleName="vmimport", AssumeRolePolicyDocument=json.dumps(trust))
    policy = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": ["s3:GetBucketLocation", "s3:GetObject", "s3:ListBucket"],
        "Resource": ["arn:aws:s3:::b-disks", "arn:aws:s3:::b-disks/*"]}]}
    iam_b.put_role_policy(RoleName="vmimport", PolicyName="vmimport",
                          PolicyDocument=json.dumps(policy))
    got = iam_b.get_role_policy(RoleName="vmimport", PolicyName="vmimport")["PolicyDocument"]
    role = iam_b.get_role(RoleName="vmimport")["Role"]
    # botocore decodes URL-encoded policy documents into dicts.
    assert got == policy, got
    assert role["AssumeRolePolicyDocument"] == trust, role
    malformed = code_of(lambda: iam_b.put_role_policy(RoleName="vmimport", PolicyName="x",
                                                      PolicyDocument="{nope"))
    s3_b.put_object(Bucket="b-disks", Key="root.raw", Body=bytes(range(256)) * 4096)
    r = ec2_b.import_image(Architecture="x86_64", BootMode="legacy-bios", Platform="Linux",
                           LicenseType="BYOL", ClientToken="boto-imp-1",
                           DiskContainers=[{"Format": "raw", "UserBucket": {
                               "S3Bucket": "b-disks", "S3Key": "root.raw"}}])

    def describe(i):
        return ec2_b.describe_import_image_tasks(
            ImportTaskIds=[i], Filters=[{"Name": "task-state", "Values": ["active", "completed"]}],
        )["ImportImageTasks"][0]

    t, seen = wait(describe, r["ImportTaskId"])
    assert t["Status"] == "completed", t
    img = ec2_b.describe_images(ImageIds=[t["ImageId"]])["Images"][0]
    check_json = json.loads(urllib.request.urlopen(
        f"{ec2_ep}/-/images/{urllib.parse.quote(t['ImageId'])}").read())
    assert check_json["size"] == 256 * 4096, check_json
    return (code, created["Role"]["Arn"], malformed, r["Status"], r["StatusMessage"], seen,
            t["SnapshotDetails"][0]["DiskImageSize"], img["State"], img["BootMode"],
            check_json["crc64"])


check("iam.get_role/create_role/put_role_policy/get_role_policy + ec2.import_image", iam_and_import)


def import_missing():
    r = ec2.import_image(DiskContainers=[{"Format": "RAW", "Url": "s3://exports/vm/missing.raw"}])
    raise AssertionError(f"accepted {r}")


check("ec2.import_image of a missing object", lambda: code_of(import_missing))


def cancel_export():
    tid = ec2.export_image(ImageId=AMI, DiskImageFormat="RAW",
                           S3ExportLocation={"S3Bucket": "exports"})["ExportImageTaskId"]
    ec2.cancel_export_task(ExportTaskId=tid)
    deleted = ec2.describe_export_image_tasks(ExportImageTaskIds=[tid])["ExportImageTasks"][0]
    return tid, deleted["Status"], deleted.get("StatusMessage")


check("ec2.cancel_export_task", cancel_export)


check("ec2 signed for another region", lambda: code_of(
    lambda: client("ec2", region="eu-west-1").describe_images()))

for name, status, out in results:
    print(f"{status:4} {name}: {out}")
sys.exit(0 if all(s == "ok" for _, s, _ in results) else 1)
