//! Sequence marks of manually keyed SAs, kept on disk.
//!
//! A manual SA has a static key and the ESP IV is its sequence number, so a sender that
//! restarted at 1 would seal again under (key, nonce) pairs it already used, and a receiver
//! that restarted with an empty window would accept packets captured before. IKE SAs get
//! fresh keys from every handshake and need none of this.
//!
//! For each manual SA and direction one small file holds a *mark*: a number at or above
//! every sequence number that direction may have used (outbound) or accepted (inbound).
//! Numbers are reserved ahead in blocks: the mark is raised to the end of the next block,
//! written and fsynced, and only then does the packet path get the new ceiling
//! ([`SeqCounter::set_ceiling`](crate::seq::SeqCounter::set_ceiling),
//! [`InboundSa::set_ceiling`]). So whatever moment a crash comes, the stored mark covers
//! every number in use, and at start an SA continues above it: the outbound counter after the
//! mark, the replay window refusing everything up to it
//! ([`InboundSa::resume_above`]). A clean stop stores the exact last number instead, so a
//! restart then skips nothing.
//!
//! The [`Keeper`] thread raises the marks ahead of the traffic. It sleeps until a packet's
//! number reaches the point where a block wants renewing ([`crate::seq::Renewal`]: the first
//! worker to reach it unparks the keeper), or for [`IDLE`] at most. (It used to look every
//! 2 ms; under one TCP flow its thread had about 4 % of the daemons' profile.) Blocks follow
//! the measured
//! rate: outbound at least [`OUT_MIN_BLOCK`] numbers or two seconds of traffic (a sender's
//! restart only skips numbers), inbound at least [`IN_MIN_BLOCK`] or 100 ms of traffic
//! (after a receiver's restart, the peer's packets up to the stored mark are refused, so the
//! block is what a restart costs). A block is renewed once a quarter of it is used, so a
//! write that stalls (a busy disk) has three quarters of a block before traffic waits. On a
//! disk whose writes take longer than that (builds beside the daemon made fsync take 100 ms
//! and more, and a TCP flow lost thousands of packets as `unreserved`), the blocks follow the
//! slowest recent write too: they cover [`WRITE_COVER`] times it, up to
//! [`MAX_WRITE_COVER_S`] of traffic, so a restart on a slow disk costs more numbers and a
//! slow write costs no packets. An authentic packet above the inbound ceiling (a peer that
//! restarted and jumped ahead) is dropped as `unreserved` and wakes the keeper, which moves
//! the mark.
//!
//! A file is named after the direction and a fingerprint of the key (SHA-256 over a label and
//! the key, not the key): a new key starts from zero, and the same key is never tracked twice.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::counters::DropReason;
use crate::esp::{InboundSa, OutboundSa};
use crate::seq::Renewal;

/// Smallest outbound block, in sequence numbers.
pub const OUT_MIN_BLOCK: u64 = 1 << 16;
/// Smallest inbound block, in sequence numbers.
pub const IN_MIN_BLOCK: u64 = 256;
/// Largest block either way.
const MAX_BLOCK: u64 = 1 << 24;
/// How much traffic an outbound block covers.
const OUT_BLOCK_TIME: f64 = 2.0;
/// How much traffic an inbound block covers.
const IN_BLOCK_TIME: f64 = 0.1;
/// A block covers at least this many times the slowest recent write (three quarters of it,
/// the headroom when it is renewed, then cover three such writes).
pub const WRITE_COVER: f64 = 4.0;
/// The most traffic a block covers for the sake of slow writes, in seconds.
pub const MAX_WRITE_COVER_S: f64 = 2.0;
/// How the slowest recent write is forgotten: per write, the figure keeps this share.
const WRITE_DECAY: f64 = 0.95;
/// How long the keeper sleeps when no packet wakes it (the rate estimates decay, failed
/// writes are retried, SAs added or removed are taken before this at the latest).
const IDLE: Duration = Duration::from_millis(100);
/// After a failed write, how long before the next try.
const RETRY: Duration = Duration::from_millis(100);

/// The first line of a file of the first format: one `mark = N` line, every store a new file
/// renamed over the old one. Still read; the first store rewrites it in the second format.
const MAGIC_V1: &str = "# mifsec sequence mark v1";
/// The first line of a file of the second format: two slots, rewritten in place.
const MAGIC: &str = "# mifsec sequence mark v2";
/// Where the two slots of a file begin, each in a 512-byte sector of its own: a write that a
/// crash tears spoils one slot at most, and the other holds the mark stored before it.
const SLOT_AT: [usize; 2] = [512, 1024];
/// Where a file's slots and padding end.
const FILE_LEN: usize = 1536;

/// Which half of an SA a mark belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Numbers this side seals with.
    Out,
    /// Numbers this side accepts.
    In,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Direction::Out => "out",
            Direction::In => "in",
        }
    }
}

/// Why a mark could not be read or written.
#[derive(Debug)]
pub struct MarkError {
    /// The file or directory.
    pub path: PathBuf,
    /// What went wrong.
    pub message: String,
}

impl fmt::Display for MarkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for MarkError {}

fn io_err(path: &Path, what: &str, e: &io::Error) -> MarkError {
    MarkError {
        path: path.to_owned(),
        message: format!("{what}: {e}"),
    }
}

/// The state directory: created (mode 0700) if missing, and checked to be writable.
pub fn prepare_dir(dir: &Path) -> Result<(), MarkError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io_err(dir, "cannot create the state directory", &e))?;
    let probe = dir.join(".write-test");
    File::create(&probe)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_err(dir, "the state directory is not writable", &e))?;
    let _ = fs::remove_file(&probe);
    Ok(())
}

/// One direction's mark file.
///
/// The file has a header and two slots, each `mark = M gen G check C` (fixed width; C is a
/// SHA-256 prefix over the rest of the line), in sectors of their own. The valid slot with
/// the higher generation holds the mark. The first store after a start writes the whole file
/// (a temporary file, fsync, rename, fsync of the directory) and keeps it open; every later
/// store overwrites the other slot with the next generation and `fdatasync`s: no new inode,
/// no rename, no directory to flush. Here that took a median 0.09 ms and at most 8 ms over
/// 200 stores, where a new file renamed over the old took 0.45 ms and up to 27 ms.
#[derive(Debug)]
pub struct MarkFile {
    dir: PathBuf,
    path: PathBuf,
    tmp: PathBuf,
    header: String,
    /// The file as written by this process, open for the next store in place.
    open: std::sync::Mutex<Option<OpenMark>>,
}

#[derive(Debug)]
struct OpenMark {
    file: File,
    /// The generation of the slot written last.
    generation: u64,
}

/// One slot's line: what a store writes.
fn slot_line(mark: u64, generation: u64) -> String {
    let body = format!("mark = {mark:020} gen {generation:020}");
    format!("{body} check {}\n", slot_check(&body))
}

fn slot_check(body: &str) -> String {
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        format!("mifsec sequence mark slot\0{body}").as_bytes(),
    );
    d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// A slot's (mark, generation), if its line is whole and its check matches.
fn parse_slot(bytes: &[u8]) -> Option<(u64, u64)> {
    let line = std::str::from_utf8(bytes.get(..slot_line(0, 0).len())?).ok()?;
    let (body, check) = line.strip_suffix('\n')?.split_once(" check ")?;
    if slot_check(body) != check {
        return None;
    }
    let rest = body.strip_prefix("mark = ")?;
    let (mark, generation) = rest.split_once(" gen ")?;
    Some((mark.parse().ok()?, generation.parse().ok()?))
}

impl MarkFile {
    /// The file for `direction` of SA `sa` whose `key || salt` is `keymat`, in `dir`.
    pub fn new(dir: &Path, sa: &str, direction: Direction, spi: u32, keymat: &[u8]) -> Self {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"mifsec manual SA sequence mark\0");
        ctx.update(keymat);
        let fp: String = ctx.finish().as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let name = format!("{}-{fp}.mark", direction.name());
        // The SA's name is the operator's: keep it readable, on one line, and short enough
        // (64 bytes) that the header stays in front of the first slot.
        let mut sa: String = sa
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        while sa.len() > 64 {
            sa.pop();
        }
        MarkFile {
            dir: dir.to_owned(),
            tmp: dir.join(format!(".{name}.tmp")),
            path: dir.join(name),
            header: format!(
                "{MAGIC}\n# sa {sa}, {} spi {spi:08x}: every sequence number at or below the mark has been used.\n\
                 # Two slots follow, at bytes 512 and 1024: the one whose check matches and whose gen is higher holds the mark.\n",
                direction.name()
            ),
            open: std::sync::Mutex::new(None),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored mark, or 0 when there is no file yet.
    pub fn load(&self) -> Result<u64, MarkError> {
        let bytes = match fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_err(&self.path, "cannot read", &e)),
        };
        parse(&bytes).ok_or_else(|| MarkError {
            path: self.path.clone(),
            message: "not a mifsec sequence mark (corrupt?); remove it only together with a \
                      change of the SA's keys"
                .into(),
        })
    }

    /// Stores `mark` durably (it may be lower than the mark before: the generation decides),
    /// so that a crash leaves either the old mark or the new one: in place into the slot not
    /// written last, or, the first time, as a whole new file.
    pub fn store(&self, mark: u64) -> Result<(), MarkError> {
        use std::os::unix::fs::FileExt as _;
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(o) = open.as_mut() {
            let generation = o.generation + 1;
            let at = SLOT_AT[(generation % 2) as usize] as u64;
            let line = slot_line(mark, generation);
            match o
                .file
                .write_all_at(line.as_bytes(), at)
                .and_then(|()| o.file.sync_data())
            {
                Ok(()) => {
                    o.generation = generation;
                    return Ok(());
                }
                Err(e) => {
                    // What the slot holds now is unknown: the next store writes a new file.
                    *open = None;
                    return Err(io_err(&self.path, "cannot store the mark", &e));
                }
            }
        }
        *open = Some(self.write_new(mark)?);
        Ok(())
    }

    /// Stores `mark` as a whole new file, as the user running now (who must be able to
    /// write the directory), and keeps it open for the stores that follow.
    pub fn store_new_file(&self, mark: u64) -> Result<(), MarkError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        *open = None;
        *open = Some(self.write_new(mark)?);
        Ok(())
    }

    /// Both slots at generation 1, through a temporary file renamed over the old one.
    fn write_new(&self, mark: u64) -> Result<OpenMark, MarkError> {
        let write = || -> io::Result<File> {
            let mut image = vec![b' '; FILE_LEN];
            image[..self.header.len()].copy_from_slice(self.header.as_bytes());
            let line = slot_line(mark, 1);
            for at in SLOT_AT {
                image[at..at + line.len()].copy_from_slice(line.as_bytes());
            }
            for end in [SLOT_AT[0], SLOT_AT[1], FILE_LEN] {
                image[end - 1] = b'\n';
            }
            let mut f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&self.tmp)?;
            f.write_all(&image)?;
            f.sync_all()?;
            fs::rename(&self.tmp, &self.path)?;
            File::open(&self.dir)?.sync_all()?;
            // Still the same file, now under its own name.
            Ok(f)
        };
        write()
            .map(|file| OpenMark {
                file,
                generation: 1,
            })
            .map_err(|e| io_err(&self.path, "cannot store the mark", &e))
    }
}

/// The mark a file holds: the valid slot with the higher generation, or a first-format
/// file's one line.
fn parse(bytes: &[u8]) -> Option<u64> {
    let first = bytes.split(|&b| b == b'\n').next()?;
    if first == MAGIC.as_bytes() {
        let a = parse_slot(bytes.get(SLOT_AT[0]..)?);
        let b = parse_slot(bytes.get(SLOT_AT[1]..)?);
        return match (a, b) {
            (Some(a), Some(b)) => Some(if b.1 > a.1 { b.0 } else { a.0 }),
            (a, b) => a.or(b).map(|(mark, _)| mark),
        };
    }
    if first != MAGIC_V1.as_bytes() {
        return None;
    }
    std::str::from_utf8(bytes)
        .ok()?
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix("mark = "))
        .and_then(|v| v.trim().parse().ok())
}

/// A rate estimate in packets per second: follows rises at once, decays slowly. It counts
/// packets, not how far sequence numbers moved: a peer that restarted jumps ahead by a whole
/// block, and that is no reason to reserve bigger blocks.
#[derive(Debug, Default)]
struct Rate {
    /// The count where the current window began.
    last: u64,
    /// Seconds into the current window.
    window: f64,
    per_s: f64,
}

impl Rate {
    /// Windows of 100 ms: a burst within a few milliseconds must not look like a rate (a
    /// block too large makes a receiver's restart cost more), but a rise shows after 5 ms:
    /// the keeper wakes when a quarter of a block is used, and a stream that starts at 10,000
    /// packets a second uses a quarter of the first, 256-number block in 6.4 ms.
    fn update(&mut self, value: u64, dt: f64) {
        self.window += dt;
        let delta = value.saturating_sub(self.last) as f64;
        if self.window >= 0.1 {
            self.per_s = (delta / self.window).max(self.per_s * 0.7);
            self.last = self.last.max(value);
            self.window = 0.0;
        } else if self.window >= 0.005 {
            self.per_s = self.per_s.max(delta / self.window);
        }
    }

    fn block(&self, secs: f64, min: u64) -> u64 {
        ((self.per_s * secs) as u64).clamp(min, MAX_BLOCK)
    }
}

/// The seconds of traffic a block covers: `base`, or more where the slowest recent write
/// (`write_s`, seconds) needs it.
fn block_secs(base: f64, write_s: f64) -> f64 {
    base.max((write_s * WRITE_COVER).min(MAX_WRITE_COVER_S))
}

/// One direction kept on disk.
#[derive(Debug)]
struct Side {
    file: MarkFile,
    /// The mark stored now (= the ceiling in force).
    stored: u64,
    rate: Rate,
    retry_at: Option<Instant>,
    /// The slowest recent write and fsync of the file, in seconds (decaying).
    write_s: f64,
    /// The block reserved last, and when.
    block: u64,
    raised_at: Instant,
}

impl Side {
    /// Raises the mark to a block above `hi` (the highest number in use) once three quarters
    /// of a block or less are left; returns the size of the block in force, whose quarter
    /// decides when to renew next.
    ///
    /// A block covers `base` seconds of the measured rate (and the slow writes, see
    /// [`block_secs`]). But a flow that starts outruns the estimate: when a quarter of the
    /// last block went within `base` seconds of reserving it, the next one is twice the size
    /// (so 256, 512, 1024, ... while a stream starts, where a fixed 256 gave the disk 19 ms
    /// at 10,000 packets a second, and one slow fsync dropped packets). That bounds a block by
    /// eight times what `base` seconds of the traffic use.
    fn renew(&mut self, hi: u64, base: f64, min: u64, now: Instant, errors: &AtomicU64) -> u64 {
        let rate_block = self.rate.block(block_secs(base, self.write_s), min);
        let size = rate_block.max(self.block);
        if self.stored.saturating_sub(hi) >= size / 4 * 3 {
            return size;
        }
        let fast = now.saturating_duration_since(self.raised_at).as_secs_f64() < base;
        let block = if fast {
            rate_block.max(self.block.saturating_mul(2)).min(MAX_BLOCK)
        } else {
            rate_block
        };
        if self.raise(hi.saturating_add(block), now, errors) {
            self.block = block;
            self.raised_at = now;
            block
        } else {
            size
        }
    }

    /// Asks the packet path to wake the keeper once a number is within three quarters of a
    /// block of the stored mark (where [`Tracked::tick`] raises it). Not while a failed
    /// write waits for its retry: the point may be passed already, and the keeper wakes for
    /// the retry on its own.
    fn arm(&self, renewal: &Renewal, block: u64) {
        if self.retry_at.is_none() {
            renewal.arm(self.stored.saturating_sub(block / 4 * 3).saturating_add(1));
        }
    }

    /// Raises the stored mark to `to` if it is higher; true if the mark is now at least `to`.
    fn raise(&mut self, to: u64, now: Instant, errors: &AtomicU64) -> bool {
        if to <= self.stored {
            return true;
        }
        if self.retry_at.is_some_and(|t| now < t) {
            return false;
        }
        let began = Instant::now();
        let stored = self.file.store(to);
        let took = began.elapsed().as_secs_f64();
        self.write_s = took.max(self.write_s * WRITE_DECAY);
        match stored {
            Ok(()) => {
                self.stored = to;
                self.retry_at = None;
                true
            }
            Err(_) => {
                errors.fetch_add(1, Ordering::Relaxed);
                self.retry_at = Some(now + RETRY);
                false
            }
        }
    }
}

/// The marks of one manual SA.
#[derive(Debug)]
pub struct Tracked {
    name: String,
    out: Arc<OutboundSa>,
    inb: Arc<InboundSa>,
    out_side: Side,
    in_side: Side,
}

impl Tracked {
    /// Loads both marks of an SA that is not in use yet, continues above them (the outbound
    /// counter after the mark, the window refusing everything up to it), and stores the first
    /// blocks before returning the SA. Any failure means the SA must not start.
    pub fn resume(
        dir: &Path,
        name: &str,
        out: OutboundSa,
        out_key: &[u8],
        mut inb: InboundSa,
        in_key: &[u8],
    ) -> Result<Self, MarkError> {
        let out_file = MarkFile::new(dir, name, Direction::Out, out.spi(), out_key);
        let in_file = MarkFile::new(dir, name, Direction::In, inb.spi(), in_key);
        let out_mark = out_file.load()?;
        let in_mark = in_file.load()?;
        out.seq().set_last(out_mark);
        inb.resume_above(in_mark);
        let out_ceiling = out_mark.saturating_add(OUT_MIN_BLOCK);
        let in_ceiling = in_mark.saturating_add(IN_MIN_BLOCK);
        out_file.store(out_ceiling)?;
        in_file.store(in_ceiling)?;
        out.seq().set_ceiling(out_ceiling);
        inb.set_ceiling(in_ceiling);
        let side = |file, stored, last, block| Side {
            file,
            stored,
            rate: Rate {
                last,
                ..Rate::default()
            },
            retry_at: None,
            write_s: 0.0,
            block,
            raised_at: Instant::now(),
        };
        Ok(Tracked {
            name: name.to_owned(),
            out: Arc::new(out),
            inb: Arc::new(inb),
            out_side: side(out_file, out_ceiling, out_mark, OUT_MIN_BLOCK),
            in_side: side(in_file, in_ceiling, 0, IN_MIN_BLOCK),
        })
    }

    /// Stores both marks again as they stand: proves that whoever runs now (the daemon may
    /// have dropped root since [`Tracked::resume`]) can keep them. Fails with a message
    /// naming the SA and the file.
    pub fn check_writable(&self) -> Result<(), MarkError> {
        for side in [&self.out_side, &self.in_side] {
            side.file
                .store_new_file(side.stored)
                .map_err(|e| MarkError {
                    message: format!(
                        "sa {}: {} (the user the daemon runs as must be able to write here)",
                        self.name, e.message
                    ),
                    path: e.path,
                })?;
        }
        Ok(())
    }

    /// The two mark files.
    pub fn files(&self) -> [&Path; 2] {
        [self.out_side.file.path(), self.in_side.file.path()]
    }

    /// The outbound SA, now shared.
    pub fn outbound(&self) -> &Arc<OutboundSa> {
        &self.out
    }

    /// The inbound SA, now shared.
    pub fn inbound(&self) -> &Arc<InboundSa> {
        &self.inb
    }

    /// One look: raises whichever ceiling the traffic is getting close to.
    fn tick(&mut self, now: Instant, dt: f64, errors: &AtomicU64) {
        let last = self.out.seq().last();
        let o = &mut self.out_side;
        o.rate.update(last, dt);
        let size = o.renew(last, OUT_BLOCK_TIME, OUT_MIN_BLOCK, now, errors);
        self.out.seq().set_ceiling(o.stored);
        o.arm(self.out.seq().renewal(), size);
        let hi = self.inb.replay().top().max(self.inb.wanted());
        let c = self.inb.counters().snapshot();
        let i = &mut self.in_side;
        i.rate.update(
            c.packets + c.dummies + c.drops[DropReason::Unreserved as usize],
            dt,
        );
        let size = i.renew(hi, IN_BLOCK_TIME, IN_MIN_BLOCK, now, errors);
        self.inb.set_ceiling(i.stored);
        i.arm(self.inb.renewal(), size);
    }

    /// After the last packet: stores the exact numbers, so the next start skips nothing.
    /// Only when nothing can use the SA any more.
    fn settle(&mut self) -> Result<(), MarkError> {
        let last = self.out.seq().last();
        self.out_side.file.store(last)?;
        self.in_side.file.store(self.inb.replay().top())
    }
}

/// The thread that keeps the marks ahead of the traffic.
#[derive(Debug)]
pub struct Keeper {
    stop: Arc<AtomicBool>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    errors: Arc<AtomicU64>,
    /// How often the thread woke up.
    wakeups: Arc<AtomicU64>,
    /// The longest it sleeps.
    idle: Duration,
    /// SAs added while the engine runs ([`Keeper::add`]), taken by the thread's next tick,
    /// and the names of SAs removed ([`Keeper::forget`]), dropped before those are added.
    incoming: Arc<std::sync::Mutex<(Vec<Tracked>, Vec<String>)>>,
}

impl Keeper {
    /// Starts the thread for `sas` (none: no thread until [`Keeper::add`]).
    pub fn start(sas: Vec<Tracked>) -> io::Result<Keeper> {
        Self::start_idle(sas, IDLE)
    }

    /// [`Keeper::start`], sleeping at most `idle` when no packet wakes it.
    fn start_idle(sas: Vec<Tracked>, idle: Duration) -> io::Result<Keeper> {
        let k = Keeper {
            idle,
            stop: Arc::new(AtomicBool::new(false)),
            thread: std::sync::Mutex::new(None),
            errors: Arc::new(AtomicU64::new(0)),
            wakeups: Arc::new(AtomicU64::new(0)),
            incoming: Arc::new(std::sync::Mutex::new((Vec::new(), Vec::new()))),
        };
        if !sas.is_empty() {
            k.spawn(sas)?;
        }
        Ok(k)
    }

    fn spawn(&self, sas: Vec<Tracked>) -> io::Result<()> {
        let (stop, errors) = (Arc::clone(&self.stop), Arc::clone(&self.errors));
        let (incoming, wakeups) = (Arc::clone(&self.incoming), Arc::clone(&self.wakeups));
        let t = std::thread::Builder::new()
            .name("mifsec-marks".into())
            .spawn({
                let idle = self.idle;
                move || keep(sas, &incoming, &stop, &errors, &wakeups, idle)
            })?;
        *self.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(t);
        Ok(())
    }

    /// Keeps the marks of an SA installed while the engine runs (its first blocks are
    /// stored already, by [`Tracked::resume`]); starts the thread if there was none.
    pub fn add(&self, sa: Tracked) -> io::Result<()> {
        let running = self
            .thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        if running {
            self.incoming
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .0
                .push(sa);
            // Its first blocks are small: taken now, not after IDLE.
            self.wake();
            Ok(())
        } else {
            self.spawn(vec![sa])
        }
    }

    /// Stops keeping the marks of SA `name`, removed from the engine: its files keep the
    /// ceilings stored last, above every number it used (sealing waits at the ceiling), so
    /// the same keys installed again resume above them. Not settled: a worker may still
    /// hold the SA for a moment.
    pub fn forget(&self, name: &str) {
        let mut g = self.incoming.lock().unwrap_or_else(|p| p.into_inner());
        // One queued but not yet taken goes at once.
        g.0.retain(|t| t.name != name);
        g.1.push(name.to_owned());
        drop(g);
        self.wake();
    }

    fn wake(&self) {
        if let Some(t) = &*self.thread.lock().unwrap_or_else(|p| p.into_inner()) {
            t.thread().unpark();
        }
    }

    /// How often the thread woke up so far (a packet at a renewal point, a change of SAs,
    /// or [`IDLE`] passed).
    pub fn wakeups(&self) -> u64 {
        self.wakeups.load(Ordering::Relaxed)
    }

    /// Failed writes of a mark so far (each one retried; traffic waits at the old ceiling).
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Stores the exact marks and stops. Call only after every thread that seals or opens
    /// with these SAs has stopped.
    pub fn settle(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.wake();
        let t = self
            .thread
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(t) = t {
            let _ = t.join();
        }
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.settle();
    }
}

fn keep(
    mut sas: Vec<Tracked>,
    incoming: &std::sync::Mutex<(Vec<Tracked>, Vec<String>)>,
    stop: &AtomicBool,
    errors: &AtomicU64,
    wakeups: &AtomicU64,
    idle: Duration,
) {
    let mut before = Instant::now();
    let me = std::thread::current();
    // The packet path wakes this thread, for the SAs it keeps.
    let adopt = |t: &Tracked| {
        t.out.seq().renewal().set_keeper(me.clone());
        t.inb.renewal().set_keeper(me.clone());
    };
    sas.iter().for_each(adopt);
    let take = |sas: &mut Vec<Tracked>| {
        let mut g = incoming.lock().unwrap_or_else(|p| p.into_inner());
        let forget = std::mem::take(&mut g.1);
        sas.retain(|t| !forget.contains(&t.name));
        g.0.iter().for_each(adopt);
        sas.append(&mut g.0);
    };
    while !stop.load(Ordering::Relaxed) {
        take(&mut sas);
        let now = Instant::now();
        let dt = now.duration_since(before).as_secs_f64();
        before = now;
        for sa in &mut sas {
            sa.tick(now, dt, errors);
        }
        // Until a packet reaches a renewal point, add, forget or settle come, or `idle`
        // passes.
        std::thread::park_timeout(idle);
        wakeups.fetch_add(1, Ordering::Relaxed);
    }
    take(&mut sas);
    // In the order they were added: an SA removed and installed again with the same keys
    // settles after its old pair (whose marks are lower).
    for sa in &mut sas {
        if sa.settle().is_err() {
            // The ceilings stored last stay: still correct, only a few numbers are skipped.
            errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aead::{Backend, Cipher};
    use crate::esp::{Mode, SaConfig};

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mifsec-marks-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        prepare_dir(&d).unwrap();
        d
    }

    const KEY_A: [u8; 20] = [7; 20];
    const KEY_B: [u8; 20] = [9; 20];

    fn pair() -> (OutboundSa, InboundSa) {
        let cfg = |spi, keymat| SaConfig {
            spi,
            cipher: Cipher::Aes128Gcm,
            backend: Backend::Ring,
            keymat,
            esn: false,
            mode: Mode::Tunnel,
            replay_window: 64,
        };
        (
            OutboundSa::new(&cfg(0x1001, &KEY_A), None).unwrap(),
            InboundSa::new(&cfg(0x2001, &KEY_B)).unwrap(),
        )
    }

    /// The SA of `pair()` resumed from the marks in `d` (what a start does).
    fn resumed(d: &Path) -> Tracked {
        let (o, i) = pair();
        Tracked::resume(d, "t", o, &KEY_A, i, &KEY_B).unwrap()
    }

    #[test]
    fn a_restart_continues_above_the_stored_ceiling() {
        let d = dir("restart");
        let t = resumed(&d);
        assert_eq!(t.outbound().seq().ceiling(), OUT_MIN_BLOCK);
        assert_eq!(t.outbound().seq().next().unwrap().0, 1);
        // A crash now: nothing settles. The next start begins above the whole block.
        drop(t);
        let t = resumed(&d);
        assert_eq!(t.outbound().seq().next().unwrap().0, OUT_MIN_BLOCK + 1);
        assert_eq!(t.inbound().replay().floor(), IN_MIN_BLOCK);
        assert_eq!(t.inbound().ceiling(), 2 * IN_MIN_BLOCK);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_clean_stop_stores_the_exact_numbers() {
        let d = dir("settle");
        let mut t = resumed(&d);
        t.outbound().seq().reserve(41).unwrap();
        t.inbound().replay().mark(17).unwrap();
        t.settle().unwrap();
        let t = resumed(&d);
        assert_eq!(t.outbound().seq().next().unwrap().0, 42);
        assert_eq!(t.inbound().replay().floor(), 17);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_keeper_raises_ceilings_ahead_of_traffic_and_for_a_peer_that_jumped() {
        let d = dir("keeper");
        let mut t = resumed(&d);
        let errors = AtomicU64::new(0);
        let now = Instant::now();
        t.outbound().seq().reserve(OUT_MIN_BLOCK - 10).unwrap();
        t.tick(now, 0.002, &errors);
        let c = t.outbound().seq().ceiling();
        assert!(c > OUT_MIN_BLOCK, "{c}");
        assert_eq!(
            MarkFile::new(&d, "t", Direction::Out, 0x1001, &KEY_A)
                .load()
                .unwrap(),
            c
        );
        // A peer far ahead (it restarted): its authentic packets are refused until the mark
        // follows, then accepted.
        let peer = OutboundSa::new(
            &SaConfig {
                spi: 0x2001,
                cipher: Cipher::Aes128Gcm,
                backend: Backend::Ring,
                keymat: &KEY_B,
                esn: false,
                mode: Mode::Tunnel,
                replay_window: 64,
            },
            None,
        )
        .unwrap();
        peer.seq().set_last(999_999);
        let packet = |peer: &OutboundSa| {
            let mut buf = vec![0u8; 128];
            let head = OutboundSa::HEADROOM;
            buf[head] = 0x45;
            buf[head + 3] = 20;
            let s = peer.seal(&mut buf, head..head + 20).unwrap();
            buf.truncate(s.range.end);
            buf.drain(..s.esp_start);
            buf
        };
        let mut p = packet(&peer);
        let len = p.len();
        assert_eq!(
            t.inbound().open(&mut p, 0..len),
            Err(DropReason::Unreserved)
        );
        assert_eq!(t.inbound().wanted(), 1_000_000);
        t.tick(now, 0.002, &errors);
        assert!(t.inbound().ceiling() > 1_000_000);
        let mut p = packet(&peer);
        assert!(t.inbound().open(&mut p, 0..len).is_ok());
        assert_eq!(errors.load(Ordering::Relaxed), 0);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_keeper_sleeps_until_a_number_reaches_its_renewal_point() {
        let d = dir("park");
        let t = resumed(&d);
        let (out, inb) = (Arc::clone(t.outbound()), Arc::clone(t.inbound()));
        // It would sleep for an hour: only the packet path can wake it within the deadlines.
        let keeper = Keeper::start_idle(vec![t], Duration::from_secs(3600)).unwrap();
        let wait = |what: &str, cond: &dyn Fn() -> bool| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !cond() {
                assert!(Instant::now() < deadline, "{what} within 10 s");
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        wait("armed", &|| out.seq().renewal().at() != u64::MAX);
        let at = out.seq().renewal().at();
        let ceiling = out.seq().ceiling();
        assert!(at > 1 && at <= ceiling, "{at} {ceiling}");
        // Up to just before the point: no wake-up, nothing moves.
        out.seq().reserve(at - 1).unwrap();
        assert_eq!(out.seq().renewal().at(), at);
        assert_eq!(keeper.wakeups(), 0);
        // The number at the point wakes it; it raises the ceiling and arms again, higher.
        out.seq().next().unwrap();
        wait("the ceiling raised", &|| {
            out.seq().ceiling() > ceiling && out.seq().renewal().at() > at
        });
        // Inbound the same: a number at its point wakes the keeper, which arms it again.
        inb.renewal().reached(inb.renewal().at());
        wait("inbound re-armed", &|| inb.renewal().at() != u64::MAX);
        assert!(keeper.wakeups() <= 3, "{}", keeper.wakeups());
        assert_eq!(keeper.errors(), 0);
        drop(keeper);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn blocks_double_while_a_flow_starts_and_follow_the_rate_after() {
        let d = dir("ramp");
        let mut t = resumed(&d);
        let errors = AtomicU64::new(0);
        let t0 = Instant::now();
        assert_eq!(t.inbound().ceiling(), IN_MIN_BLOCK);
        // A quarter of the first block used at once: the next block is twice as large.
        t.inbound().replay().mark(IN_MIN_BLOCK / 4 + 1).unwrap();
        t.tick(t0, 0.001, &errors);
        assert_eq!(
            t.inbound().ceiling(),
            IN_MIN_BLOCK / 4 + 1 + 2 * IN_MIN_BLOCK
        );
        // And a quarter of that one soon after: twice again.
        let hi = t.inbound().ceiling() - IN_MIN_BLOCK * 2 * 3 / 4 + 1;
        t.inbound().replay().mark(hi).unwrap();
        t.tick(t0 + Duration::from_millis(10), 0.001, &errors);
        assert_eq!(t.inbound().ceiling(), hi + 4 * IN_MIN_BLOCK);
        // A quarter used only after seconds: back to what the (low) rate asks, the minimum;
        // the mark already covers that, and the next renewal is a quarter of it away.
        let ceiling = t.inbound().ceiling();
        let hi = ceiling - IN_MIN_BLOCK * 4 * 3 / 4 + 1;
        t.inbound().replay().mark(hi).unwrap();
        t.tick(t0 + Duration::from_secs(5), 5.0, &errors);
        assert_eq!(t.inbound().ceiling(), ceiling);
        assert_eq!(
            t.inbound().renewal().at(),
            ceiling - IN_MIN_BLOCK / 4 * 3 + 1
        );
        assert_eq!(errors.load(Ordering::Relaxed), 0);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn blocks_cover_slow_writes_up_to_a_bound() {
        // A fast disk: the base time decides.
        assert_eq!(block_secs(IN_BLOCK_TIME, 0.001), IN_BLOCK_TIME);
        assert_eq!(block_secs(OUT_BLOCK_TIME, 0.2), OUT_BLOCK_TIME);
        // A write of 150 ms: inbound blocks cover 600 ms of traffic, so the three quarters
        // left when one is renewed cover three such writes.
        let secs = block_secs(IN_BLOCK_TIME, 0.15);
        assert!((secs - 0.6).abs() < 1e-9, "{secs}");
        assert!(secs * 0.75 >= 3.0 * 0.15 - 1e-9);
        // A disk that hangs for seconds does not make blocks without bound.
        assert_eq!(block_secs(IN_BLOCK_TIME, 10.0), MAX_WRITE_COVER_S);
        let r = Rate {
            per_s: 200_000.0,
            ..Rate::default()
        };
        assert_eq!(
            r.block(block_secs(IN_BLOCK_TIME, 0.15), IN_MIN_BLOCK),
            120_000
        );
    }

    #[test]
    fn stores_after_the_first_rewrite_a_slot_in_place_and_a_torn_slot_falls_back() {
        use std::os::unix::fs::MetadataExt as _;
        let d = dir("slots");
        // A long name of wide characters still leaves the header in front of the slots.
        let f = MarkFile::new(&d, &"ß".repeat(300), Direction::In, 7, &KEY_A);
        f.store(100).unwrap();
        let inode = fs::metadata(f.path()).unwrap().ino();
        f.store(200).unwrap();
        f.store(300).unwrap();
        assert_eq!(f.load().unwrap(), 300);
        assert_eq!(fs::metadata(f.path()).unwrap().ino(), inode, "not in place");
        assert_eq!(fs::metadata(f.path()).unwrap().len(), FILE_LEN as u64);
        // Lower (a clean stop): the generation decides, not the value.
        f.store(250).unwrap();
        assert_eq!(f.load().unwrap(), 250);
        // A crash tore the slot written last (generation 4, slot 0): the other one holds
        // the mark stored before it.
        let mut bytes = fs::read(f.path()).unwrap();
        bytes[SLOT_AT[0] + 10] = b'9';
        fs::write(f.path(), &bytes).unwrap();
        assert_eq!(f.load().unwrap(), 300);
        bytes[SLOT_AT[1] + 3] = b'x';
        fs::write(f.path(), &bytes).unwrap();
        let e = f.load().unwrap_err();
        assert!(e.to_string().contains("not a mifsec sequence mark"), "{e}");
        // check_writable's store writes a new file again.
        f.store_new_file(400).unwrap();
        assert_eq!(f.load().unwrap(), 400);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_file_of_the_first_format_is_read_and_rewritten() {
        let d = dir("v1");
        let f = MarkFile::new(&d, "t", Direction::Out, 1, &KEY_A);
        fs::write(
            f.path(),
            format!("{MAGIC_V1}\n# sa t, out spi 00000001: ...\nmark = 4242\n"),
        )
        .unwrap();
        assert_eq!(f.load().unwrap(), 4242);
        f.store(5000).unwrap();
        assert!(fs::read_to_string(f.path()).unwrap().starts_with(MAGIC));
        assert_eq!(f.load().unwrap(), 5000);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn keys_are_tracked_apart_and_a_corrupt_file_is_an_error() {
        let d = dir("corrupt");
        let a = MarkFile::new(&d, "t", Direction::Out, 1, &KEY_A);
        let b = MarkFile::new(&d, "t", Direction::Out, 1, &KEY_B);
        let c = MarkFile::new(&d, "t", Direction::In, 1, &KEY_A);
        assert_ne!(a.path(), b.path());
        assert_ne!(a.path(), c.path());
        a.store(5).unwrap();
        assert_eq!(a.load().unwrap(), 5);
        assert_eq!(b.load().unwrap(), 0);
        fs::write(a.path(), "garbage").unwrap();
        let e = a.load().unwrap_err();
        assert!(e.to_string().contains("not a mifsec sequence mark"), "{e}");
        fs::remove_dir_all(&d).unwrap();
    }
}
