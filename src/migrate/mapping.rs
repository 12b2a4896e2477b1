//! What an image *is*, in terms both clouds' importers understand, and the translations between
//! EC2's and ECS's spellings of it (`../shared/reference/ec2-vm-import-export.md` §7).
//!
//! A cross-cloud migration loses the source cloud's own image record: only the disk bytes
//! travel. Without these attributes the new image boots in the wrong firmware mode (an arm64 or
//! UEFI disk under BIOS does not boot), or is registered with the wrong OS and licence. So the
//! source's description is captured once, before the export, as an [`ImageAttrs`] kept in the
//! state file, and the import is built from it.

use serde::{Deserialize, Serialize};

/// The cloud an image lives in.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Cloud {
    /// Alibaba Cloud: ECS images, OSS buckets.
    #[default]
    Aliyun,
    /// AWS: EC2 AMIs, S3 buckets, VM Import/Export.
    Aws,
}

impl Cloud {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aliyun => "aliyun",
            Self::Aws => "aws",
        }
    }

    /// For `skip_serializing_if`: the default keeps state files and keys of same-cloud
    /// migrations exactly as older versions wrote them.
    pub fn is_aliyun(&self) -> bool {
        *self == Self::Aliyun
    }
}

impl std::fmt::Display for Cloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Firmware the disk boots with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootMode {
    Bios,
    Uefi,
}

/// Guest operating system family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OsType {
    Linux,
    Windows,
}

/// A source image, cloud-neutral: what the importer on the other side must be told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageAttrs {
    pub cloud: Cloud,
    pub image_id: String,
    pub name: String,
    pub description: String,
    /// `x86_64`, `i386` or `arm64` (both clouds spell these alike).
    pub architecture: String,
    pub boot_mode: BootMode,
    pub os_type: OsType,
    /// Alibaba's `Platform` value (`Ubuntu`, `Others Linux`, `Windows Server 2019`, …).
    pub platform: String,
    /// The guest requires IMDSv2 (`ImdsSupport=v2.0` / `Features.ImdsSupport=v2`).
    pub imds_v2: bool,
    /// The guest has NVMe drivers (Alibaba `Features.NvmeSupport=supported`).
    pub nvme: bool,
    /// Size of each disk in GiB, system disk first (`None` = unknown).
    pub disks_gib: Vec<Option<u64>>,
}

/// Alibaba's Linux platform names, matched case-insensitively in an image's name or
/// description; the longer names come first so `CentOS Stream` wins over `CentOS`.
const LINUX_PLATFORMS: &[(&str, &str)] = &[
    ("centos stream", "CentOS Stream"),
    ("fedora coreos", "Fedora CoreOS"),
    ("rocky", "Rocky Linux"),
    ("almalinux", "AlmaLinux"),
    ("alma linux", "AlmaLinux"),
    ("ubuntu", "Ubuntu"),
    ("debian", "Debian"),
    ("centos", "CentOS"),
    ("opensuse", "OpenSUSE"),
    ("suse", "SUSE"),
    ("sles", "SUSE"),
    ("red hat", "RedHat"),
    ("redhat", "RedHat"),
    ("rhel", "RedHat"),
    ("fedora", "Fedora"),
    ("anolis", "Anolis"),
    ("alibaba cloud linux", "Aliyun"),
    ("coreos", "CoreOS"),
    ("freebsd", "FreeBSD"),
    ("gentoo", "Gentoo"),
    ("kylin", "Kylin"),
];

const WINDOWS_VERSIONS: &[&str] = &["2022", "2019", "2016", "2012", "2008", "2003"];

/// Alibaba's `Platform` for an image described by `text` (name, description, billing platform).
pub fn alibaba_platform(os: OsType, text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    match os {
        OsType::Windows => WINDOWS_VERSIONS
            .iter()
            .find(|v| lower.contains(*v))
            .map(|v| format!("Windows Server {v}"))
            .unwrap_or_else(|| "Other Windows".into()),
        OsType::Linux => LINUX_PLATFORMS
            .iter()
            .find(|(needle, _)| lower.contains(needle))
            .map(|(_, p)| (*p).to_string())
            .unwrap_or_else(|| "Others Linux".into()),
    }
}

/// A name ECS ImportImage accepts: 2–128 characters, starting with a letter, letters, digits
/// and `. : _ -` only, not starting with `aliyun` or `acs:`; else `migrated-<fallback id>`.
pub fn ecs_image_name(name: &str, fallback_id: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '.' | ':' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(128)
        .collect();
    let valid = cleaned.chars().count() >= 2
        && cleaned.chars().next().is_some_and(|c| c.is_alphabetic())
        && !cleaned.to_ascii_lowercase().starts_with("aliyun")
        && !cleaned.starts_with("acs:")
        && !cleaned.contains("http:")
        && !cleaned.contains("https:");
    if valid {
        cleaned
    } else {
        format!("migrated-{fallback_id}")
    }
}

/// ECS `Description`: 2–256 characters, not starting with `http(s)://`.
pub fn ecs_description(text: &str) -> String {
    let t: String = text.chars().take(256).collect();
    if t.chars().count() < 2 || t.starts_with("http://") || t.starts_with("https://") {
        "Migrated by ossrelay".into()
    } else {
        t
    }
}

impl ImageAttrs {
    /// An ECS image's attributes (Alibaba → AWS).
    pub fn from_ecs(i: &crate::acs::ecs::Image) -> Self {
        let os_type = if i.os_type.eq_ignore_ascii_case("windows") {
            OsType::Windows
        } else {
            OsType::Linux
        };
        let architecture = if i.architecture.is_empty() {
            "x86_64".to_string()
        } else {
            i.architecture.clone()
        };
        let boot_mode = if i.boot_mode.eq_ignore_ascii_case("uefi")
            || (i.boot_mode.is_empty() && architecture == "arm64")
        {
            BootMode::Uefi
        } else {
            BootMode::Bios
        };
        let mut disks_gib = vec![i.system_disk().and_then(|d| d.size_gib())];
        disks_gib.extend(i.data_disks().iter().map(|d| d.size_gib()));
        Self {
            cloud: Cloud::Aliyun,
            image_id: i.image_id.clone(),
            name: i.image_name.clone(),
            description: i.description.clone(),
            architecture,
            boot_mode,
            os_type,
            platform: if i.platform.is_empty() {
                alibaba_platform(os_type, &i.os_name)
            } else {
                i.platform.clone()
            },
            imds_v2: i.features.imds_support.eq_ignore_ascii_case("v2"),
            nvme: i.features.nvme_support.eq_ignore_ascii_case("supported"),
            disks_gib,
        }
    }

    /// EC2 `BootMode` for ImportImage.
    pub fn ec2_boot_mode(&self) -> &'static str {
        match self.boot_mode {
            BootMode::Bios => "legacy-bios",
            BootMode::Uefi => "uefi",
        }
    }

    /// EC2 `Platform` for ImportImage.
    pub fn ec2_platform(&self) -> &'static str {
        match self.os_type {
            OsType::Linux => "Linux",
            OsType::Windows => "Windows",
        }
    }

    /// EC2 `LicenseType`: Linux is always BYOL; Windows Server AWS-licensed (the documented
    /// default for server editions).
    pub fn ec2_license_type(&self) -> &'static str {
        match self.os_type {
            OsType::Linux => "BYOL",
            OsType::Windows => "AWS",
        }
    }

    /// ECS `BootMode`.
    pub fn ecs_boot_mode(&self) -> &'static str {
        match self.boot_mode {
            BootMode::Bios => "BIOS",
            BootMode::Uefi => "UEFI",
        }
    }

    /// ECS `OSType`.
    pub fn ecs_os_type(&self) -> &'static str {
        match self.os_type {
            OsType::Linux => "linux",
            OsType::Windows => "windows",
        }
    }

    /// Refuses what the other cloud cannot import, before anything is exported.
    pub fn check_importable(&self, into: Cloud) -> Result<(), String> {
        match (into, self.architecture.as_str()) {
            (_, a) if a.ends_with("_mac") => Err(format!(
                "image {} has architecture {a}: Mac AMIs cannot be exported or imported",
                self.image_id
            )),
            (Cloud::Aws, "arm64") => Err(format!(
                "image {} is arm64: EC2 ImportImage documents only i386 and x86_64; \
                 nothing was exported",
                self.image_id
            )),
            (_, "x86_64" | "i386" | "arm64") => Ok(()),
            (_, a) => Err(format!(
                "image {} has architecture {a:?}, which {into} cannot import",
                self.image_id
            )),
        }
    }

    /// The ECS ImportImage request for these attributes (AWS → Alibaba).
    pub fn ecs_import_input(
        &self,
        name: &str,
        dst_bucket: &str,
        disks: &[super::DiskState],
        tags: Vec<(String, String)>,
        client_token: String,
    ) -> crate::acs::ecs::ImportImageInput {
        use crate::acs::ecs::ImportImageInput;
        // Alibaba refuses BIOS for arm64 (InvalidBootMode.NotSupport).
        let boot = if self.architecture == "arm64" {
            "UEFI"
        } else {
            self.ecs_boot_mode()
        };
        ImportImageInput {
            image_name: name.to_string(),
            description: Some(ecs_description(&format!(
                "Migrated by ossrelay from {} {}{}",
                self.cloud,
                self.image_id,
                if self.description.is_empty() {
                    String::new()
                } else {
                    format!(": {}", self.description)
                }
            ))),
            architecture: Some(self.architecture.clone()),
            os_type: Some(self.ecs_os_type().into()),
            platform: Some(self.platform.clone()),
            boot_mode: Some(boot.into()),
            license_type: None,
            role_name: None,
            disks: super::aliyun::ecs_import_disks(dst_bucket, disks),
            nvme_support: self.nvme.then(|| "supported".into()),
            imds_support: self.imds_v2.then(|| "v2".into()),
            tags,
            client_token: Some(client_token),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_from_names() {
        assert_eq!(
            alibaba_platform(OsType::Linux, "ubuntu-jammy-22.04-amd64-server"),
            "Ubuntu"
        );
        assert_eq!(
            alibaba_platform(OsType::Linux, "CentOS Stream 9 x86_64"),
            "CentOS Stream"
        );
        assert_eq!(
            alibaba_platform(OsType::Linux, "Rocky-9-EC2-Base"),
            "Rocky Linux"
        );
        assert_eq!(
            alibaba_platform(OsType::Linux, "my golden image"),
            "Others Linux"
        );
        assert_eq!(
            alibaba_platform(OsType::Windows, "Windows_Server-2019-English-Full-Base"),
            "Windows Server 2019"
        );
        assert_eq!(
            alibaba_platform(OsType::Windows, "win11 desktop"),
            "Other Windows"
        );
    }

    #[test]
    fn ecs_names_are_made_valid() {
        assert_eq!(
            ecs_image_name("web server (prod)", "ami-1"),
            "web-server--prod-"
        );
        assert_eq!(ecs_image_name("1abc", "ami-1"), "migrated-ami-1");
        assert_eq!(ecs_image_name("aliyun-x", "ami-1"), "migrated-ami-1");
        assert_eq!(ecs_image_name("x", "ami-1"), "migrated-ami-1");
        assert_eq!(ecs_image_name(&"a".repeat(300), "ami-1").len(), 128);
        assert_eq!(ecs_description("h"), "Migrated by ossrelay");
        assert_eq!(ecs_description(&"d".repeat(300)).len(), 256);
    }

    fn ecs_image(arch: &str, boot: &str, os: &str) -> crate::acs::ecs::Image {
        let mut i = crate::acs::ecs::Image {
            image_id: "m-1".into(),
            image_name: "web".into(),
            architecture: arch.into(),
            boot_mode: boot.into(),
            os_type: os.into(),
            platform: "Ubuntu".into(),
            ..Default::default()
        };
        i.disk_device_mappings = vec![
            crate::acs::ecs::DiskDeviceMapping {
                device: "/dev/xvda".into(),
                size: "40".into(),
                r#type: "system".into(),
                ..Default::default()
            },
            crate::acs::ecs::DiskDeviceMapping {
                device: "/dev/xvdb".into(),
                size: "100".into(),
                r#type: "data".into(),
                ..Default::default()
            },
        ];
        i
    }

    #[test]
    fn ecs_to_ec2_fields() {
        let a = ImageAttrs::from_ecs(&ecs_image("x86_64", "UEFI", "linux"));
        assert_eq!(a.ec2_boot_mode(), "uefi");
        assert_eq!(a.ec2_platform(), "Linux");
        assert_eq!(a.ec2_license_type(), "BYOL");
        assert_eq!(a.disks_gib, vec![Some(40), Some(100)]);
        let w = ImageAttrs::from_ecs(&ecs_image("x86_64", "", "windows"));
        assert_eq!(
            (w.ec2_boot_mode(), w.ec2_platform(), w.ec2_license_type()),
            ("legacy-bios", "Windows", "AWS")
        );
        // An arm64 ECS image with no boot mode boots UEFI, and EC2 cannot take it.
        let arm = ImageAttrs::from_ecs(&ecs_image("arm64", "", "linux"));
        assert_eq!(arm.boot_mode, BootMode::Uefi);
        assert!(arm
            .check_importable(Cloud::Aws)
            .unwrap_err()
            .contains("arm64"));
        assert!(arm.check_importable(Cloud::Aliyun).is_ok());
        assert!(a.check_importable(Cloud::Aws).is_ok());
    }
}
