//! `krio_runtime::stats`: locating cgroups from real samples of this
//! development machine, and reading fake v1 and v2 cgroup trees in temp
//! dirs. No root needed.

use std::path::Path;

use krio_runtime::stats::{CgroupDirs, CgroupStats, MemoryStats, PidsStats};

/// `cat /proc/self/cgroup` on the development machine (hybrid: v1
/// controllers on their own hierarchies, a cgroup2 mount beside them).
const MACHINE_CGROUP: &str = "\
9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/7838ec70fda45d18f739979fd4959ef9
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
";

/// The cgroup lines of `/proc/self/mountinfo` on the same machine, and a
/// few others around them.
const MACHINE_MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
23 27 0:22 / /sys rw,relatime - sysfs sysfs rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard,resv_strict,resuid=65534,resgid=65534
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

/// A Debian 12 host with only cgroup v2 (systemd's default layout).
const V2_MOUNTINFO: &str = "\
24 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
26 24 0:24 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

#[test]
fn stats_dirs_of_machine_sample() {
    let d = CgroupDirs::from_proc_cgroup(MACHINE_CGROUP, MACHINE_MOUNTINFO);
    assert_eq!(
        d.v1("memory"),
        Some(Path::new(
            "/sys/fs/cgroup/memory/process_api/7838ec70fda45d18f739979fd4959ef9"
        ))
    );
    assert_eq!(d.v1("cpuacct"), Some(Path::new("/sys/fs/cgroup/cpuacct")));
    assert_eq!(d.v1("pids"), Some(Path::new("/sys/fs/cgroup/pids")));
    assert_eq!(
        d.v1("name=systemd"),
        Some(Path::new("/sys/fs/cgroup/systemd"))
    );
    assert_eq!(d.unified(), Some(Path::new("/sys/fs/cgroup/unified")));
    assert_eq!(d.v1_controllers().count(), 9);
}

#[test]
fn stats_dirs_of_runc_cgroups_path() {
    let d = CgroupDirs::from_cgroups_path("/krio/krio-abc", MACHINE_CGROUP, MACHINE_MOUNTINFO);
    assert_eq!(
        d.v1("memory"),
        Some(Path::new("/sys/fs/cgroup/memory/krio/krio-abc"))
    );
    assert_eq!(
        d.v1("cpuacct"),
        Some(Path::new("/sys/fs/cgroup/cpuacct/krio/krio-abc"))
    );
    assert_eq!(
        d.unified(),
        Some(Path::new("/sys/fs/cgroup/unified/krio/krio-abc"))
    );
    // A pod cgroup parent from the kubelet, on a pure v2 host.
    let d = CgroupDirs::from_cgroups_path(
        "/kubepods/besteffort/pod123/krio-abc",
        "0::/system.slice/krio.service\n",
        V2_MOUNTINFO,
    );
    assert_eq!(
        d.unified(),
        Some(Path::new(
            "/sys/fs/cgroup/kubepods/besteffort/pod123/krio-abc"
        ))
    );
    assert_eq!(d.v1("memory"), None);
    // Relative: under krio's own cgroup, as runc does.
    let d =
        CgroupDirs::from_cgroups_path("krio-abc", "0::/system.slice/krio.service\n", V2_MOUNTINFO);
    assert_eq!(
        d.unified(),
        Some(Path::new(
            "/sys/fs/cgroup/system.slice/krio.service/krio-abc"
        ))
    );
}

#[test]
fn stats_dirs_of_this_process() {
    let own = std::process::id();
    let d = CgroupDirs::for_pid(own).expect("read /proc/self/cgroup");
    if d.is_empty() {
        println!("SKIPPED stats_dirs_of_this_process: no cgroup file system mounted");
        return;
    }
    for (controller, dir) in d.v1_controllers() {
        assert!(
            dir.is_dir(),
            "{controller}: {} is not a directory",
            dir.display()
        );
    }
    if let Some(dir) = d.unified() {
        assert!(dir.is_dir(), "{} is not a directory", dir.display());
    }
    let stats = CgroupStats::read(&d);
    println!("this test process's cgroup: {stats:?}");
    if d.v1("memory").is_some() || d.v1("cpuacct").is_some() {
        assert!(stats.cpu.usage_core_nanoseconds.is_some() || d.v1("cpuacct").is_none());
        assert!(stats.memory.usage_bytes.is_some() || d.v1("memory").is_none());
    }
}

/// A fake cgroup file system: mount points under a temp dir and the
/// `mountinfo` text that names them.
struct FakeTree {
    dir: tempfile::TempDir,
}

impl FakeTree {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn mount(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn write(&self, rel: &str, content: &str) {
        let path = self.dir.path().join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, content).expect("write");
    }

    fn v1_mountinfo(&self) -> String {
        format!(
            "32 31 0:29 / {} rw - cgroup cgroup rw,cpu,cpuacct\n\
             35 31 0:32 / {} rw - cgroup cgroup rw,memory\n\
             39 31 0:36 / {} rw - cgroup cgroup rw,pids\n\
             41 31 0:38 / {} rw - cgroup2 cgroup2 rw\n",
            self.mount("cpu,cpuacct"),
            self.mount("memory"),
            self.mount("pids"),
            self.mount("unified"),
        )
    }

    fn v2_mountinfo(&self) -> String {
        format!(
            "26 24 0:24 / {} rw - cgroup2 cgroup2 rw,nsdelegate\n",
            self.mount("v2")
        )
    }
}

const V1_CGROUP: &str = "4:memory:/krio/c1\n3:pids:/krio/c1\n2:cpu,cpuacct:/krio/c1\n0::/krio/c1\n";

const V1_MEMORY_STAT: &str = "\
cache 1000
rss 100
pgfault 7
total_cache 4096000
total_rss 52428800
total_inactive_file 1048576
total_active_file 2000
total_pgfault 12345
total_pgmajfault 12
";

#[test]
fn stats_of_fake_v1_tree() {
    let t = FakeTree::new();
    t.write("cpu,cpuacct/krio/c1/cpuacct.usage", "987654321\n");
    t.write("cpu,cpuacct/krio/c1/cpuacct.usage_user", "900000000\n");
    // No usage_sys: the tick counts of cpuacct.stat (USER_HZ = 100).
    t.write("cpu,cpuacct/krio/c1/cpuacct.stat", "user 90\nsystem 8\n");
    t.write(
        "cpu,cpuacct/krio/c1/cpu.stat",
        "nr_periods 10\nnr_throttled 4\nthrottled_time 5000\n",
    );
    t.write("memory/krio/c1/memory.usage_in_bytes", "60000000\n");
    t.write("memory/krio/c1/memory.max_usage_in_bytes", "70000000\n");
    t.write("memory/krio/c1/memory.failcnt", "6\n");
    t.write("memory/krio/c1/memory.stat", V1_MEMORY_STAT);
    t.write("memory/krio/c1/memory.limit_in_bytes", "104857600\n");
    t.write("memory/krio/c1/memory.memsw.usage_in_bytes", "61000000\n");
    t.write("memory/krio/c1/memory.memsw.limit_in_bytes", "209715200\n");
    t.write(
        "memory/krio/c1/memory.oom_control",
        "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
    );
    t.write("pids/krio/c1/pids.current", "4\n");
    t.write("pids/krio/c1/pids.max", "max\n");
    let d = CgroupDirs::from_proc_cgroup(V1_CGROUP, &t.v1_mountinfo());
    let s = CgroupStats::read(&d);
    assert_eq!(s.cpu.usage_core_nanoseconds, Some(987_654_321));
    assert_eq!(s.cpu.user_nanoseconds, Some(900_000_000));
    assert_eq!(s.cpu.system_nanoseconds, Some(80_000_000));
    assert_eq!(s.cpu.cfs_periods, Some(10));
    assert_eq!(s.cpu.cfs_throttled_periods, Some(4));
    assert_eq!(s.cpu.cfs_throttled_nanoseconds, Some(5000));
    let working_set = 60_000_000 - 1_048_576;
    assert_eq!(
        s.memory,
        MemoryStats {
            usage_bytes: Some(60_000_000),
            working_set_bytes: Some(working_set),
            rss_bytes: Some(52_428_800),
            page_faults: Some(12345),
            major_page_faults: Some(12),
            limit_bytes: Some(104_857_600),
            available_bytes: Some(104_857_600 - working_set),
            swap_usage_bytes: Some(1_000_000),
            swap_available_bytes: Some(104_857_600 - 1_000_000),
            oom_kills: Some(3),
            cache_bytes: Some(4_096_000),
            mapped_file_bytes: None,
            kernel_bytes: None,
            max_usage_bytes: Some(70_000_000),
            failcnt: Some(6),
            own_page_faults: Some(7),
            own_major_page_faults: None,
        }
    );
    assert_eq!(
        s.pids,
        PidsStats {
            current: Some(4),
            limit: None
        }
    );
}

#[test]
fn stats_of_fake_v1_tree_unlimited_and_missing_files() {
    let t = FakeTree::new();
    // No cpuacct.usage: the unified cpu.stat (hybrid) is the fallback.
    t.write("cpu,cpuacct/krio/c1/cpu.shares", "1024\n");
    t.write(
        "unified/krio/c1/cpu.stat",
        "usage_usec 1500\nuser_usec 1000\n",
    );
    t.write("memory/krio/c1/memory.usage_in_bytes", "1000\n");
    t.write("memory/krio/c1/memory.stat", "total_inactive_file 5000\n");
    t.write(
        "memory/krio/c1/memory.limit_in_bytes",
        "9223372036854771712\n",
    );
    t.write(
        "memory/krio/c1/memory.memsw.limit_in_bytes",
        "9223372036854771712\n",
    );
    let d = CgroupDirs::from_proc_cgroup(V1_CGROUP, &t.v1_mountinfo());
    let s = CgroupStats::read(&d);
    assert_eq!(s.cpu.usage_core_nanoseconds, Some(1_500_000));
    assert_eq!(s.memory.usage_bytes, Some(1000));
    // Inactive file above usage: floored at zero.
    assert_eq!(s.memory.working_set_bytes, Some(0));
    assert_eq!(s.memory.limit_bytes, None);
    assert_eq!(s.memory.available_bytes, None);
    assert_eq!(s.memory.rss_bytes, None);
    assert_eq!(s.memory.swap_usage_bytes, None);
    assert_eq!(s.memory.swap_available_bytes, None);
    assert_eq!(s.memory.oom_kills, None);
    // No pids directory for this cgroup at all.
    assert_eq!(s.pids, PidsStats::default());
}

#[test]
fn stats_of_fake_v2_tree() {
    let t = FakeTree::new();
    let c = "v2/kubepods/pod1/krio-c1";
    t.write(
        &format!("{c}/cpu.stat"),
        "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\nnr_periods 0\n",
    );
    t.write(&format!("{c}/memory.current"), "73400320\n");
    t.write(
        &format!("{c}/memory.stat"),
        "anon 52428800\nfile 20971520\nactive_file 10485760\ninactive_file 10485760\npgfault 4242\npgmajfault 7\nfile_mapped 8192\nkernel_stack 100\nslab 900\n",
    );
    t.write(&format!("{c}/memory.max"), "134217728\n");
    t.write(&format!("{c}/memory.swap.current"), "4096\n");
    t.write(&format!("{c}/memory.swap.max"), "max\n");
    t.write(
        &format!("{c}/memory.events"),
        "low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n",
    );
    t.write(&format!("{c}/pids.current"), "12\n");
    t.write(&format!("{c}/pids.max"), "1024\n");
    let d = CgroupDirs::from_proc_cgroup("0::/kubepods/pod1/krio-c1\n", &t.v2_mountinfo());
    let s = CgroupStats::read(&d);
    assert_eq!(s.cpu.usage_core_nanoseconds, Some(2_500_000_000));
    assert_eq!(s.cpu.user_nanoseconds, Some(2_000_000_000));
    assert_eq!(s.cpu.system_nanoseconds, Some(500_000_000));
    assert_eq!(s.cpu.cfs_periods, Some(0));
    assert_eq!(s.cpu.cfs_throttled_nanoseconds, None);
    let ws = 73_400_320 - 10_485_760;
    assert_eq!(
        s.memory,
        MemoryStats {
            usage_bytes: Some(73_400_320),
            working_set_bytes: Some(ws),
            rss_bytes: Some(52_428_800),
            page_faults: Some(4242),
            major_page_faults: Some(7),
            limit_bytes: Some(134_217_728),
            available_bytes: Some(134_217_728 - ws),
            swap_usage_bytes: Some(4096),
            swap_available_bytes: None,
            oom_kills: Some(1),
            cache_bytes: Some(20_971_520),
            mapped_file_bytes: Some(8192),
            // Before 5.18 there is no `kernel` line: stack + slab.
            kernel_bytes: Some(1000),
            max_usage_bytes: None,
            failcnt: Some(2),
            own_page_faults: None,
            own_major_page_faults: None,
        }
    );
    assert_eq!(
        s.pids,
        PidsStats {
            current: Some(12),
            limit: Some(1024)
        }
    );
    // The same cgroup through its cgroupsPath.
    let by_path =
        CgroupDirs::from_cgroups_path("/kubepods/pod1/krio-c1", "0::/\n", &t.v2_mountinfo());
    assert_eq!(by_path, d);
}

#[test]
fn stats_of_fake_v2_tree_unlimited_and_gone() {
    let t = FakeTree::new();
    let c = "v2/krio/krio-c2";
    t.write(&format!("{c}/memory.current"), "8192\n");
    t.write(&format!("{c}/memory.max"), "max\n");
    let d = CgroupDirs::from_proc_cgroup("0::/krio/krio-c2\n", &t.v2_mountinfo());
    let s = CgroupStats::read(&d);
    assert_eq!(s.memory.usage_bytes, Some(8192));
    assert_eq!(s.memory.working_set_bytes, Some(8192));
    assert_eq!(s.memory.limit_bytes, None);
    assert_eq!(s.memory.available_bytes, None);
    assert_eq!(s.cpu.usage_core_nanoseconds, None);
    // A cgroup that no longer exists reads as all `None`.
    let gone = CgroupDirs::from_proc_cgroup("0::/krio/removed\n", &t.v2_mountinfo());
    assert_eq!(CgroupStats::read(&gone), CgroupStats::default());
    assert_eq!(
        CgroupStats::read(&CgroupDirs::default()),
        CgroupStats::default()
    );
}
