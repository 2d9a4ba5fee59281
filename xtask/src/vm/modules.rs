//! Which kernel modules the guest's init loads, in which order, read from
//! the kernel's `modules.dep` and `modules.builtin`.

use std::collections::{HashMap, HashSet};

use anyhow::{Result, bail};

/// A kernel's `modules.dep`: for each module, its file and the files it needs.
#[derive(Debug, Default)]
pub struct ModulesDep {
    /// Module name → (its path, its dependencies' paths), paths relative to
    /// `/lib/modules/RELEASE`.
    entries: HashMap<String, (String, Vec<String>)>,
}

impl ModulesDep {
    /// Parses lines like `kernel/fs/9p/9p.ko.xz: kernel/net/9p/9pnet.ko.xz …`.
    pub fn parse(text: &str) -> Self {
        let entries = text
            .lines()
            .filter_map(|line| line.split_once(':'))
            .map(|(path, deps)| {
                let deps = deps.split_whitespace().map(str::to_owned).collect();
                (name_of(path), (path.trim().to_owned(), deps))
            })
            .collect();
        ModulesDep { entries }
    }

    /// The files to insmod for `wanted`, dependencies first, each once.
    /// Modules listed in `builtin` (names from `modules.builtin`) need nothing.
    pub fn load_order(&self, builtin: &HashSet<String>, wanted: &[&str]) -> Result<Vec<String>> {
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        for name in wanted {
            let name = normalize(name);
            if self.entries.contains_key(&name) {
                self.visit(&name, &mut seen, &mut order);
            } else if !builtin.contains(&name) {
                bail!(
                    "the kernel has no module {name}: it is neither in modules.dep nor in modules.builtin"
                );
            }
        }
        Ok(order)
    }

    fn visit(&self, name: &str, seen: &mut HashSet<String>, order: &mut Vec<String>) {
        if !seen.insert(name.to_owned()) {
            return;
        }
        let Some((path, deps)) = self.entries.get(name) else {
            return;
        };
        for dep in deps {
            self.visit(&name_of(dep), seen, order);
        }
        order.push(path.clone());
    }
}

/// Module names in `modules.builtin` (one path a line).
pub fn builtin(text: &str) -> HashSet<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(name_of)
        .collect()
}

/// A module's name from its path: `kernel/net/9p/9pnet_virtio.ko.xz` → `9pnet_virtio`.
pub fn name_of(path: &str) -> String {
    let file = path.trim().rsplit('/').next().unwrap_or_default();
    let stem = file.split_once(".ko").map_or(file, |(stem, _)| stem);
    normalize(stem)
}

/// The kernel treats `-` and `_` in module names alike.
fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/virtio/virtio.ko.xz:
kernel/drivers/virtio/virtio_ring.ko.xz: kernel/drivers/virtio/virtio.ko.xz
kernel/drivers/virtio/virtio_pci_modern_dev.ko.xz:
kernel/drivers/virtio/virtio_pci.ko.xz: kernel/drivers/virtio/virtio_pci_modern_dev.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz kernel/drivers/virtio/virtio.ko.xz
kernel/net/9p/9pnet.ko.xz:
kernel/net/9p/9pnet_virtio.ko.xz: kernel/drivers/virtio/virtio_ring.ko.xz kernel/net/9p/9pnet.ko.xz kernel/drivers/virtio/virtio.ko.xz
kernel/fs/netfs/netfs.ko.xz:
kernel/fs/fscache/fscache.ko.xz: kernel/fs/netfs/netfs.ko.xz
kernel/fs/9p/9p.ko.xz: kernel/fs/fscache/fscache.ko.xz kernel/net/9p/9pnet.ko.xz kernel/fs/netfs/netfs.ko.xz
kernel/drivers/net/dummy.ko.xz:
";

    #[test]
    fn names_drop_the_directory_and_the_compression() {
        assert_eq!(name_of("kernel/net/9p/9pnet_virtio.ko.xz"), "9pnet_virtio");
        assert_eq!(name_of("kernel/fs/9p/9p.ko"), "9p");
        assert_eq!(
            name_of(" kernel/drivers/virtio/virtio-pci.ko.zst"),
            "virtio_pci"
        );
    }

    #[test]
    fn dependencies_load_first_and_once() {
        let dep = ModulesDep::parse(DEP);
        let order = dep
            .load_order(&HashSet::new(), &["virtio_pci", "9pnet_virtio", "9p"])
            .unwrap();
        let names: Vec<String> = order.iter().map(|path| name_of(path)).collect();
        assert_eq!(
            names,
            [
                "virtio_pci_modern_dev",
                "virtio",
                "virtio_ring",
                "virtio_pci",
                "9pnet",
                "9pnet_virtio",
                "netfs",
                "fscache",
                "9p"
            ]
        );
        assert_eq!(
            order[0],
            "kernel/drivers/virtio/virtio_pci_modern_dev.ko.xz"
        );
    }

    #[test]
    fn built_in_modules_need_nothing_and_unknown_ones_fail() {
        let dep = ModulesDep::parse("kernel/drivers/net/dummy.ko:\n");
        let builtin = builtin("kernel/drivers/virtio/virtio_pci.ko\nkernel/fs/9p/9p.ko\n");
        assert!(
            dep.load_order(&builtin, &["virtio_pci", "9p"])
                .unwrap()
                .is_empty()
        );
        let err = dep.load_order(&builtin, &["9pnet_virtio"]).unwrap_err();
        assert!(err.to_string().contains("no module 9pnet_virtio"), "{err}");
    }
}
