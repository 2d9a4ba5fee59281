//! Offsets the eBPF programs need, found at load time: struct members from
//! the kernel's BTF, tracepoint fields from tracefs format files.

use std::{fs, path::Path};

use anyhow::{Context, Result, anyhow, bail};
use btfparse::{Offset, Readable, TypeInformation};
use procespy_common::KernelConfig;

/// Where tracefs is mounted (or will be).
pub const TRACEFS: &str = "/sys/kernel/tracing";
/// The kernel's own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

struct Bytes(Vec<u8>);

impl Readable for Bytes {
    fn read(&self, offset: u64, buffer: &mut [u8]) -> btfparse::Result<()> {
        let start = usize::try_from(offset).ok();
        let slice = start
            .and_then(|start| self.0.get(start..start.checked_add(buffer.len())?))
            .ok_or_else(|| {
                btfparse::Error::new(btfparse::ErrorKind::IOError, "read past the end of BTF")
            })?;
        buffer.copy_from_slice(slice);
        Ok(())
    }
}

/// Byte offsets of kernel struct members, from BTF.
struct KernelTypes(TypeInformation);

impl KernelTypes {
    fn load(path: &Path) -> Result<Self> {
        let data = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let info = TypeInformation::new(&Bytes(data))
            .map_err(|err| anyhow!("parsing {}: {err:?}", path.display()))?;
        Ok(Self(info))
    }

    fn offset_of(&self, ty: &str, path: &str) -> Result<u32> {
        let id = self
            .0
            .id_of(ty)
            .ok_or_else(|| anyhow!("BTF has no type {ty}"))?;
        match self.0.offset_of(id, path) {
            Ok((_, Offset::ByteOffset(offset))) => Ok(offset),
            Ok((_, Offset::BitOffsetAndSize(..))) => bail!("{ty}.{path} is a bit field"),
            Err(err) => Err(anyhow!("BTF has no member {ty}.{path}: {err:?}")),
        }
    }
}

/// Finds the offset of `field` in a tracepoint's format description.
///
/// Lines look like `\tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;`.
pub fn field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let mut parts = line.trim().split(';');
        let decl = parts.next()?.strip_prefix("field:")?;
        let name = decl.rsplit(' ').next()?;
        let name = name.split('[').next()?;
        if name != field {
            return None;
        }
        parts.find_map(|part| part.trim().strip_prefix("offset:")?.parse().ok())
    })
}

fn tracepoint_field(tracefs: &Path, event: &str, field: &str) -> Result<u32> {
    let path = tracefs.join("events").join(event).join("format");
    let format =
        fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    field_offset(&format, field).ok_or_else(|| anyhow!("{} has no field {field}", path.display()))
}

/// Computes the programs' [`KernelConfig`] for the running kernel.
pub fn kernel_config(btf: &Path, tracefs: &Path) -> Result<KernelConfig> {
    let types = KernelTypes::load(btf)?;
    let rss0 = types.offset_of("mm_struct", "rss_stat[0]")?;
    let rss1 = types.offset_of("mm_struct", "rss_stat[1]")?;
    let page_size = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096);
    Ok(KernelConfig {
        mm_rss_stat: rss0,
        percpu_counter_size: rss1
            .checked_sub(rss0)
            .filter(|&size| size > 0)
            .ok_or_else(|| anyhow!("mm_struct.rss_stat is not an array"))?,
        percpu_counter_count: types.offset_of("percpu_counter", "count")?,
        task_mm: types.offset_of("task_struct", "mm")?,
        task_pid: types.offset_of("task_struct", "pid")?,
        task_tgid: types.offset_of("task_struct", "tgid")?,
        exit_group_dead: tracepoint_field(tracefs, "sched/sched_process_exit", "group_dead")?,
        rename_pid: tracepoint_field(tracefs, "task/task_rename", "pid")?,
        rename_newcomm: tracepoint_field(tracefs, "task/task_rename", "newcomm")?,
        page_size: u32::try_from(page_size).unwrap_or(4096),
        _pad: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXIT_FORMAT: &str = "name: sched_process_exit\nID: 312\nformat:\n\
        \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
        \tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\
        \tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;\n\
        \tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;\n";

    #[test]
    fn finds_fields_by_exact_name() {
        assert_eq!(field_offset(EXIT_FORMAT, "group_dead"), Some(32));
        assert_eq!(field_offset(EXIT_FORMAT, "pid"), Some(24));
        assert_eq!(field_offset(EXIT_FORMAT, "comm"), Some(8));
        assert_eq!(field_offset(EXIT_FORMAT, "dead"), None);
        assert_eq!(field_offset(EXIT_FORMAT, "common"), None);
    }

    #[test]
    fn data_loc_fields_are_found() {
        let format = "\tfield:__data_loc char[] child_comm;\toffset:16;\tsize:4;\tsigned:0;\n";
        assert_eq!(field_offset(format, "child_comm"), Some(16));
    }

    #[test]
    fn this_kernel_has_every_offset() {
        if !Path::new(VMLINUX_BTF).exists() {
            eprintln!("skipped: {VMLINUX_BTF} is absent");
            return;
        }
        let types = KernelTypes::load(Path::new(VMLINUX_BTF)).unwrap();
        let rss0 = types.offset_of("mm_struct", "rss_stat[0]").unwrap();
        let rss1 = types.offset_of("mm_struct", "rss_stat[1]").unwrap();
        assert!(rss1 > rss0);
        assert!(types.offset_of("task_struct", "tgid").unwrap() > 0);
        assert!(
            types
                .offset_of("task_struct", "nonexistent_member")
                .is_err()
        );
    }
}
