//! The floor: `procespy_floor`, an empty program on the `rss_stat` BTF
//! tracepoint in procespy's eBPF object, which the daemon never loads. The
//! bench loads and attaches it itself: what any program there costs.

use anyhow::{Context, Result, anyhow};
use aya::{Btf, Ebpf, EbpfLoader, programs::BtfTracePoint};

use crate::ebpf;

/// The floor program's name in the eBPF object.
pub const PROGRAM: &str = "procespy_floor";

/// The floor, attached to `rss_stat` while this lives.
pub struct Floor {
    _ebpf: Ebpf,
}

impl Floor {
    /// Loads the object `cargo xtask build-ebpf` built (its maps, and of its
    /// programs only the floor) and attaches the floor.
    pub fn attach() -> Result<Self> {
        let btf = Btf::from_sys_fs().map_err(|err| anyhow!("reading the kernel's BTF: {err}"))?;
        let object = ebpf::object_path();
        let mut loaded = EbpfLoader::new()
            .btf(Some(&btf))
            .load_file(&object)
            .map_err(|err| anyhow!("loading {}: {err}", object.display()))?;
        let program: &mut BtfTracePoint = loaded
            .program_mut(PROGRAM)
            .with_context(|| format!("{} has no program {PROGRAM}", object.display()))?
            .try_into()?;
        program
            .load("rss_stat", &btf)
            .map_err(|err| anyhow!("the kernel refused {PROGRAM}: {err:#}"))?;
        program
            .attach()
            .with_context(|| format!("attaching {PROGRAM} to tp_btf/rss_stat"))?;
        Ok(Floor { _ebpf: loaded })
    }
}
