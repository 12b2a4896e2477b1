use super::*;
use crate::aws::xml;

/// Decodes a form body into sorted pairs, so bodies compare as parameter sets.
fn form(body: &str) -> Vec<(String, String)> {
    let dec = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8()
            .unwrap()
            .into_owned()
    };
    let mut v: Vec<(String, String)> = body
        .split('&')
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap();
            (dec(k), dec(v))
        })
        .collect();
    v.sort();
    v
}

/// Our body equals botocore's byte for byte when the order is the same, and as a parameter
/// set in any case.
fn same(ours: &Params, botocore: &str) {
    assert_eq!(form(&ours.encode()), form(botocore), "{}", ours.encode());
}

#[test]
fn export_image_body_is_botocores() {
    let mut i = ExportImageInput::new(
        "ami-0123456789abcdef0",
        DiskImageFormat::Raw,
        "my-export-bucket",
    );
    i.s3_prefix = Some("exports/".into());
    i.role_name = Some("vmimport".into());
    i.client_token = Some("tok-1".into());
    let botocore = "Action=ExportImage&Version=2016-11-15&ImageId=ami-0123456789abcdef0&DiskImageFormat=RAW&S3ExportLocation.S3Bucket=my-export-bucket&S3ExportLocation.S3Prefix=exports%2F&RoleName=vmimport&ClientToken=tok-1";
    assert_eq!(export_image_params(&i).encode(), botocore);
    i.tags = vec![("job".into(), "j 1".into())];
    i.description = Some("d".into());
    let p = export_image_params(&i);
    assert_eq!(
        p.get("TagSpecification.1.ResourceType"),
        Some("export-image-task")
    );
    assert_eq!(p.get("TagSpecification.1.Tag.1.Value"), Some("j 1"));
    assert!(p.encode().contains("Tag.1.Value=j%201"));
}

#[test]
fn describe_and_cancel_bodies_are_botocores() {
    same(
        &describe_export_image_tasks_params(
            &["export-ami-1234567890abcdef0".into()],
            &["active", "completed"],
            None,
            None,
        ),
        "Action=DescribeExportImageTasks&Version=2016-11-15&ExportImageTaskId.1=export-ami-1234567890abcdef0&Filter.1.Name=task-state&Filter.1.Value.1=active&Filter.1.Value.2=completed",
    );
    same(
        &cancel_export_task_params("export-ami-1234567890abcdef0"),
        "Action=CancelExportTask&Version=2016-11-15&ExportTaskId=export-ami-1234567890abcdef0",
    );
    // The trap: Filters.N (plural) for import tasks.
    same(
        &describe_import_image_tasks_params(
            &["import-ami-01234567890abcdef".into()],
            &["active"],
            Some(50),
            None,
        ),
        "Action=DescribeImportImageTasks&Version=2016-11-15&ImportTaskId.1=import-ami-01234567890abcdef&Filters.1.Name=task-state&Filters.1.Value.1=active&MaxResults=50",
    );
    same(
        &cancel_import_task_params("import-ami-01234567890abcdef", "user"),
        "Action=CancelImportTask&Version=2016-11-15&ImportTaskId=import-ami-01234567890abcdef&CancelReason=user",
    );
    same(
        &describe_images_params(
            &["ami-0123456789abcdef0".into()],
            &["self".into()],
            &[("state", vec!["available".into()])],
            true,
        ),
        "Action=DescribeImages&Version=2016-11-15&ImageId.1=ami-0123456789abcdef0&Owner.1=self&Filter.1.Name=state&Filter.1.Value.1=available&IncludeDeprecated=true",
    );
    let p = describe_export_image_tasks_params(&[], &[], Some(500), Some("tok/2"));
    assert_eq!(p.get("NextToken"), Some("tok/2"));
    assert_eq!(p.get("MaxResults"), Some("500"));
}

#[test]
fn import_image_body_is_botocores() {
    let i = ImportImageInput {
        description: Some("d".into()),
        architecture: Some("x86_64".into()),
        boot_mode: Some("uefi".into()),
        platform: Some("Linux".into()),
        license_type: Some("BYOL".into()),
        role_name: Some("vmimport".into()),
        encrypted: Some(false),
        disk_containers: vec![
            DiskContainer {
                format: "raw".into(),
                source: DiskSource::UserBucket {
                    bucket: "my-import-bucket".into(),
                    key: "disks/root.raw".into(),
                },
                description: Some("root".into()),
                device_name: None,
            },
            DiskContainer {
                format: "vhd".into(),
                source: DiskSource::Url("s3://b/k.vhd".into()),
                description: None,
                device_name: None,
            },
        ],
        tags: vec![("k".into(), "v".into())],
        client_token: None,
    };
    let botocore = "Action=ImportImage&Version=2016-11-15&Description=d&Architecture=x86_64&BootMode=uefi&Platform=Linux&LicenseType=BYOL&RoleName=vmimport&Encrypted=false&DiskContainer.1.Description=root&DiskContainer.1.Format=raw&DiskContainer.1.UserBucket.S3Bucket=my-import-bucket&DiskContainer.1.UserBucket.S3Key=disks%2Froot.raw&DiskContainer.2.Format=vhd&DiskContainer.2.Url=s3%3A%2F%2Fb%2Fk.vhd&TagSpecification.1.ResourceType=import-image-task&TagSpecification.1.Tag.1.Key=k&TagSpecification.1.Tag.1.Value=v";
    assert_eq!(import_image_params(&i).encode(), botocore);
}

const EXPORT_ANSWER: &str = r#"<ExportImageResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>req-1</requestId>
  <description>nightly</description>
  <diskImageFormat>RAW</diskImageFormat>
  <exportImageTaskId>export-ami-1234567890abcdef0</exportImageTaskId>
  <imageId>ami-0123456789abcdef0</imageId>
  <roleName>vmimport</roleName>
  <progress>0</progress>
  <s3ExportLocation><s3Bucket>my-export-bucket</s3Bucket><s3Prefix>exports/</s3Prefix></s3ExportLocation>
  <status>active</status>
  <statusMessage>validating</statusMessage>
  <tagSet><item><key>job</key><value>7</value></item></tagSet>
</ExportImageResponse>"#;

#[test]
fn parses_export_answer_and_object_key() {
    let t = parse_export_task(&xml::parse(EXPORT_ANSWER.as_bytes()).unwrap());
    assert_eq!(t.task_id, "export-ami-1234567890abcdef0");
    assert_eq!(t.image_id, "ami-0123456789abcdef0");
    assert_eq!(t.status, "active");
    assert_eq!(t.status_message.as_deref(), Some("validating"));
    assert_eq!(t.progress, Some(0));
    assert_eq!(
        (t.s3_bucket.as_str(), t.s3_prefix.as_str()),
        ("my-export-bucket", "exports/")
    );
    assert_eq!(t.disk_image_format.as_deref(), Some("RAW"));
    assert_eq!(t.tags, [("job".to_string(), "7".to_string())]);
    assert_eq!(
        t.object_key(DiskImageFormat::Raw),
        "exports/export-ami-1234567890abcdef0.raw"
    );
    assert_eq!(
        t.object_key(DiskImageFormat::Vmdk),
        "exports/export-ami-1234567890abcdef0.vmdk"
    );
    assert_eq!(DiskImageFormat::parse("Vhd"), Some(DiskImageFormat::Vhd));
    assert_eq!(DiskImageFormat::parse("qcow2"), None);
}

#[test]
fn parses_import_tasks_with_snapshot_details() {
    let body = r#"<DescribeImportImageTasksResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15">
  <requestId>r</requestId>
  <importImageTaskSet>
    <item>
      <importTaskId>import-ami-01234567890abcdef</importTaskId>
      <architecture>x86_64</architecture><bootMode>uefi</bootMode><platform>Linux</platform>
      <progress>76</progress><status>active</status><statusMessage>preparing ami</statusMessage>
      <snapshotDetailSet><item>
        <deviceName>/dev/sda1</deviceName><diskImageSize>3.115815424E9</diskImageSize>
        <format>RAW</format><snapshotId>snap-1</snapshotId><status>completed</status>
        <userBucket><s3Bucket>b</s3Bucket><s3Key>k.raw</s3Key></userBucket>
      </item></snapshotDetailSet>
    </item>
    <item><importTaskId>import-ami-2</importTaskId><status>completed</status><imageId>ami-2</imageId></item>
  </importImageTaskSet>
</DescribeImportImageTasksResponse>"#;
    let root = xml::parse(body.as_bytes()).unwrap();
    let tasks: Vec<_> = root
        .items_at(&["importImageTaskSet"])
        .into_iter()
        .map(parse_import_task)
        .collect();
    assert_eq!(tasks.len(), 2);
    let a = &tasks[0];
    assert_eq!(a.task_id, "import-ami-01234567890abcdef");
    assert_eq!(a.progress, Some(76));
    assert_eq!(a.status_message.as_deref(), Some("preparing ami"));
    assert_eq!(a.image_id, None);
    assert_eq!(a.boot_mode.as_deref(), Some("uefi"));
    let s = &a.snapshot_details[0];
    assert_eq!(s.disk_image_size, Some(3_115_815_424.0));
    assert_eq!(s.snapshot_id.as_deref(), Some("snap-1"));
    assert_eq!(
        (s.s3_bucket.as_deref(), s.s3_key.as_deref()),
        (Some("b"), Some("k.raw"))
    );
    assert_eq!(tasks[1].image_id.as_deref(), Some("ami-2"));
}

#[test]
fn parses_images_and_root_volume() {
    let body = r#"<DescribeImagesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>r</requestId>
  <imagesSet><item>
    <imageId>ami-1</imageId><imageState>available</imageState><name>web</name>
    <architecture>x86_64</architecture><bootMode>uefi</bootMode>
    <platformDetails>Linux/UNIX</platformDetails><rootDeviceName>/dev/xvda</rootDeviceName>
    <imdsSupport>v2.0</imdsSupport>
    <productCodes><item><productCode>abc</productCode><type>marketplace</type></item></productCodes>
    <blockDeviceMapping>
      <item><deviceName>/dev/sdb</deviceName><ebs><volumeSize>100</volumeSize></ebs></item>
      <item><deviceName>/dev/xvda</deviceName><ebs><snapshotId>snap-r</snapshotId><volumeSize>8</volumeSize></ebs></item>
      <item><deviceName>/dev/sdc</deviceName><virtualName>ephemeral0</virtualName></item>
    </blockDeviceMapping>
    <tagSet><item><key>Name</key><value>web</value></item></tagSet>
  </item></imagesSet>
</DescribeImagesResponse>"#;
    let root = xml::parse(body.as_bytes()).unwrap();
    let img = parse_image(root.items_at(&["imagesSet"])[0]);
    assert_eq!(img.state, "available");
    assert_eq!(img.platform, None);
    assert_eq!(img.imds_support.as_deref(), Some("v2.0"));
    assert_eq!(img.product_codes, ["abc"]);
    assert_eq!(img.block_devices.len(), 3);
    assert_eq!(img.block_devices[2].volume_size_gib, None);
    assert_eq!(
        img.root_volume_gib(),
        Some(8),
        "the root device's size, not the first"
    );
    let no_root = Ec2Image {
        root_device_name: None,
        ..img.clone()
    };
    assert_eq!(no_root.root_volume_gib(), Some(100));
}

#[tokio::test]
async fn pagination_follows_next_token_and_stops() {
    let pages = [
        r#"<R><exportImageTaskSet><item><exportImageTaskId>t1</exportImageTaskId></item></exportImageTaskSet><nextToken>p2</nextToken></R>"#,
        r#"<R><exportImageTaskSet><item><exportImageTaskId>t2</exportImageTaskId></item><item><exportImageTaskId>t3</exportImageTaskId></item></exportImageTaskSet><nextToken>p3</nextToken></R>"#,
        r#"<R><exportImageTaskSet/></R>"#,
    ];
    let seen = std::sync::Mutex::new(Vec::new());
    let out = paginate(
        |p: Params| {
            let n = {
                let mut s = seen.lock().unwrap();
                s.push(p.get("NextToken").map(str::to_string));
                s.len() - 1
            };
            async move { Ok(xml::parse(pages[n].as_bytes()).unwrap()) }
        },
        |t| describe_export_image_tasks_params(&[], &[], Some(500), t),
        "exportImageTaskSet",
        parse_export_task,
    )
    .await
    .unwrap();
    let ids: Vec<_> = out.iter().map(|t| t.task_id.as_str()).collect();
    assert_eq!(ids, ["t1", "t2", "t3"]);
    assert_eq!(
        *seen.lock().unwrap(),
        [None, Some("p2".to_string()), Some("p3".to_string())]
    );

    // A service that repeats its token does not loop forever.
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let out = paginate(
        |_p| {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { Ok(xml::parse(pages[0].as_bytes()).unwrap()) }
        },
        |t| describe_export_image_tasks_params(&[], &[], None, t),
        "exportImageTaskSet",
        parse_export_task,
    )
    .await
    .unwrap();
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(out.len(), 2);
}
