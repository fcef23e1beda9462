//! Parsers for the `/proc` files the engine reads.

use std::fs;
use std::io;

fn bad(what: &str, path: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{path}: cannot parse {what}"))
}

fn hex(s: &str) -> u64 {
    u64::from_str_radix(s.trim(), 16).unwrap_or(0)
}

fn nums<T: std::str::FromStr>(s: &str) -> Vec<T> {
    s.split_whitespace().filter_map(|x| x.parse().ok()).collect()
}

/// `/proc/<pid>/status`, the fields the engine uses.
#[derive(Debug, Default, Clone)]
pub struct Status {
    pub name: String,
    pub state: char,
    pub tgid: i32,
    pub ppid: i32,
    pub nspid: Vec<i32>,
    pub nspgid: Vec<i32>,
    pub nssid: Vec<i32>,
    pub uids: [u32; 4],
    pub gids: [u32; 4],
    pub groups: Vec<u32>,
    pub cap_inh: u64,
    pub cap_prm: u64,
    pub cap_eff: u64,
    pub cap_bnd: u64,
    pub cap_amb: u64,
    pub no_new_privs: bool,
    pub seccomp: u32,
    pub umask: u32,
    pub sig_pnd: u64,
    pub shd_pnd: u64,
    pub sig_blk: u64,
    pub sig_ign: u64,
    pub sig_cgt: u64,
}

impl Status {
    pub fn read(path: &str) -> io::Result<Status> {
        let text = fs::read_to_string(path)?;
        let mut s = Status::default();
        for line in text.lines() {
            let Some((k, v)) = line.split_once(':') else { continue };
            let v = v.trim();
            match k {
                "Name" => s.name = v.to_string(),
                "State" => s.state = v.chars().next().unwrap_or('?'),
                "Tgid" => s.tgid = v.parse().unwrap_or(0),
                "PPid" => s.ppid = v.parse().unwrap_or(0),
                "NSpid" => s.nspid = nums(v),
                "NSpgid" => s.nspgid = nums(v),
                "NSsid" => s.nssid = nums(v),
                "Uid" | "Gid" => {
                    let n: Vec<u32> = nums(v);
                    if n.len() != 4 {
                        return Err(bad(k, path));
                    }
                    let dst = if k == "Uid" { &mut s.uids } else { &mut s.gids };
                    dst.copy_from_slice(&n);
                }
                "Groups" => s.groups = nums(v),
                "CapInh" => s.cap_inh = hex(v),
                "CapPrm" => s.cap_prm = hex(v),
                "CapEff" => s.cap_eff = hex(v),
                "CapBnd" => s.cap_bnd = hex(v),
                "CapAmb" => s.cap_amb = hex(v),
                "NoNewPrivs" => s.no_new_privs = v == "1",
                "Seccomp" => s.seccomp = v.parse().unwrap_or(0),
                "Umask" => s.umask = u32::from_str_radix(v, 8).unwrap_or(0o22),
                "SigPnd" => s.sig_pnd = hex(v),
                "ShdPnd" => s.shd_pnd = hex(v),
                "SigBlk" => s.sig_blk = hex(v),
                "SigIgn" => s.sig_ign = hex(v),
                "SigCgt" => s.sig_cgt = hex(v),
                _ => {}
            }
        }
        if s.nspid.is_empty() {
            return Err(bad("NSpid", path));
        }
        Ok(s)
    }
}

/// `/proc/<pid>/stat` fields after the command name (field 3 is index 0).
#[derive(Debug, Default, Clone)]
pub struct Stat {
    pub state: char,
    pub ppid: i32,
    pub start_code: u64,
    pub end_code: u64,
    pub start_stack: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
    pub exit_code: i32,
}

impl Stat {
    pub fn read(path: &str) -> io::Result<Stat> {
        let text = fs::read_to_string(path)?;
        let rest = text.rsplit_once(')').map(|x| x.1).ok_or_else(|| bad("stat", path))?;
        let f: Vec<&str> = rest.split_whitespace().collect();
        // f[0] is field 3 (state); field N is f[N-3].
        let g = |n: usize| f.get(n - 3).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
        if f.len() < 50 {
            return Err(bad("stat", path));
        }
        Ok(Stat {
            state: f[0].chars().next().unwrap_or('?'),
            ppid: g(4) as i32,
            start_code: g(26),
            end_code: g(27),
            start_stack: g(28),
            start_data: g(45),
            end_data: g(46),
            start_brk: g(47),
            arg_start: g(48),
            arg_end: g(49),
            env_start: g(50),
            env_end: g(51),
            exit_code: g(52) as i32,
        })
    }
}

/// One VMA from `/proc/<pid>/smaps`.
#[derive(Debug, Clone, Default)]
pub struct MapEntry {
    pub start: u64,
    pub end: u64,
    pub perms: [u8; 4],
    pub offset: u64,
    pub dev: String,
    pub inode: u64,
    pub path: String,
    pub vmflags: Vec<String>,
}

impl MapEntry {
    pub fn prot(&self) -> i32 {
        let mut p = 0;
        if self.perms[0] == b'r' {
            p |= libc::PROT_READ;
        }
        if self.perms[1] == b'w' {
            p |= libc::PROT_WRITE;
        }
        if self.perms[2] == b'x' {
            p |= libc::PROT_EXEC;
        }
        p
    }
    pub fn shared(&self) -> bool {
        self.perms[3] == b's'
    }
    pub fn has_flag(&self, f: &str) -> bool {
        self.vmflags.iter().any(|x| x == f)
    }
}

fn parse_map_line(line: &str) -> Option<MapEntry> {
    let mut it = line.splitn(6, ' ');
    let range = it.next()?;
    let perms = it.next()?.as_bytes();
    let offset = it.next()?;
    let dev = it.next()?;
    let inode = it.next()?;
    let path = it.next().unwrap_or("").trim_start();
    let (s, e) = range.split_once('-')?;
    if perms.len() != 4 {
        return None;
    }
    Some(MapEntry {
        start: u64::from_str_radix(s, 16).ok()?,
        end: u64::from_str_radix(e, 16).ok()?,
        perms: [perms[0], perms[1], perms[2], perms[3]],
        offset: u64::from_str_radix(offset, 16).ok()?,
        dev: dev.to_string(),
        inode: inode.parse().ok()?,
        path: path.to_string(),
        vmflags: Vec::new(),
    })
}

/// VMAs with their `VmFlags`, from `/proc/<pid>/smaps`.
pub fn smaps(pid: i32) -> io::Result<Vec<MapEntry>> {
    let path = format!("/proc/{pid}/smaps");
    let text = fs::read_to_string(&path)?;
    let mut out: Vec<MapEntry> = Vec::new();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("VmFlags:") {
            if let Some(last) = out.last_mut() {
                last.vmflags = v.split_whitespace().map(str::to_string).collect();
            }
        } else if line.as_bytes().first().is_some_and(|c| c.is_ascii_hexdigit()) && line.contains('-') {
            // A header line; key lines ("Size:  4 kB") never start with a hex digit followed by '-'.
            match parse_map_line(line) {
                Some(e) => out.push(e),
                None if line.split_whitespace().next().is_some_and(|r| r.contains('-') && !r.ends_with(':')) => {
                    return Err(bad("smaps", &path))
                }
                None => {}
            }
        }
    }
    Ok(out)
}

/// VMAs from `/proc/<pid>/maps`: like [`smaps`] but without `VmFlags`, and
/// cheap (smaps walks every page table to count RSS: ~20 ms per 2 GiB).
pub fn maps(pid: i32) -> io::Result<Vec<MapEntry>> {
    let path = format!("/proc/{pid}/maps");
    let text = fs::read_to_string(&path)?;
    text.lines().map(|l| parse_map_line(l).ok_or_else(|| bad("maps", &path))).collect()
}

/// Mount ids visible in the mount namespace of `pid` (`/proc/<pid>/mountinfo`).
pub fn mount_ids(pid: i32) -> io::Result<std::collections::HashSet<i32>> {
    let text = fs::read_to_string(format!("/proc/{pid}/mountinfo"))?;
    Ok(text.lines().filter_map(|l| l.split_whitespace().next()?.parse().ok()).collect())
}

/// Thread ids of process `pid`.
pub fn threads(pid: i32) -> io::Result<Vec<i32>> {
    let mut v: Vec<i32> = fs::read_dir(format!("/proc/{pid}/task"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    v.sort_unstable();
    // The leader first.
    if let Some(i) = v.iter().position(|&t| t == pid) {
        v.remove(i);
        v.insert(0, pid);
    }
    Ok(v)
}

/// Children of every thread of `pid`.
pub fn children(pid: i32) -> io::Result<Vec<i32>> {
    let mut out = Vec::new();
    for t in threads(pid)? {
        match fs::read_to_string(format!("/proc/{pid}/task/{t}/children")) {
            Ok(s) => out.extend(nums::<i32>(&s)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// `/proc/<pid>/fdinfo/<fd>`.
#[derive(Debug, Default, Clone)]
pub struct FdInfo {
    pub pos: i64,
    pub flags: i32,
    pub mnt_id: i32,
    pub ino: u64,
    /// The whole text, for the fields of special files (`crate::events`)
    /// and file locks (`crate::locks`).
    pub text: String,
}

pub fn fdinfo(pid: i32, fd: i32) -> io::Result<FdInfo> {
    let path = format!("/proc/{pid}/fdinfo/{fd}");
    let text = fs::read_to_string(&path)?;
    let mut i = FdInfo::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else { continue };
        let v = v.trim();
        match k {
            "pos" => i.pos = v.parse().unwrap_or(0),
            "flags" => i.flags = i32::from_str_radix(v, 8).map_err(|_| bad("flags", &path))?,
            "mnt_id" => i.mnt_id = v.parse().unwrap_or(0),
            "ino" => i.ino = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    i.text = text;
    Ok(i)
}

/// Open fd numbers of `pid`, ascending.
pub fn fds(pid: i32) -> io::Result<Vec<i32>> {
    let mut v: Vec<i32> = fs::read_dir(format!("/proc/{pid}/fd"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    v.sort_unstable();
    Ok(v)
}

/// `/proc/<pid>/auxv` as machine words.
pub fn auxv(pid: i32) -> io::Result<Vec<u64>> {
    let b = fs::read(format!("/proc/{pid}/auxv"))?;
    Ok(b.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_own_status_stat_and_maps() {
        let me = std::process::id() as i32;
        let s = Status::read(&format!("/proc/{me}/status")).unwrap();
        assert_eq!(s.tgid, me);
        assert!(*s.nspid.last().unwrap() > 0);
        let st = Stat::read(&format!("/proc/{me}/stat")).unwrap();
        assert!(st.start_code > 0 && st.start_code < st.end_code);
        let maps = smaps(me).unwrap();
        assert!(maps.iter().any(|m| m.path == "[stack]" && m.has_flag("gd")));
        assert!(maps.iter().any(|m| m.path == "[vdso]"));
        assert!(maps.windows(2).all(|w| w[0].end <= w[1].start));
    }

    #[test]
    fn map_line_with_spaces_in_path() {
        let e = parse_map_line("7f00-7f01 rw-s 00001000 00:05 42   /tmp/a b (deleted)").unwrap();
        assert_eq!(e.path, "/tmp/a b (deleted)");
        assert!(e.shared());
        assert_eq!(e.offset, 0x1000);
    }
}
