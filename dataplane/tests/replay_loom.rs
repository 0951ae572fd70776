//! loom models of the lock-free anti-replay window.
//!
//! Run with:
//! `RUSTFLAGS="--cfg loom" cargo test -p mifsec-dataplane --release --test replay_loom`
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;

use mifsec_dataplane::replay::{ReplayError, ReplayWindow};

fn window(pre: &[u64]) -> Arc<ReplayWindow> {
    let w = ReplayWindow::new(64).unwrap();
    for &s in pre {
        w.mark(s).unwrap();
    }
    Arc::new(w)
}

/// (a) Two threads mark the same number: exactly one wins, the other sees `Replayed`.
#[test]
fn same_seq_exactly_one_winner() {
    loom::model(|| {
        // 40 shares its word (block 1) with 33, 7 shares block 0 with 3: both words are in use.
        let w = window(&[3, 33]);
        for seq in [40u64, 7] {
            let w2 = w.clone();
            let h = thread::spawn(move || w2.check(seq).and_then(|()| w2.mark(seq)));
            let mine = w.check(seq).and_then(|()| w.mark(seq));
            let theirs = h.join().unwrap();
            let oks = [mine, theirs].iter().filter(|r| r.is_ok()).count();
            assert_eq!(oks, 1, "{mine:?} {theirs:?}");
            assert!(
                mine == Err(ReplayError::Replayed) || theirs == Err(ReplayError::Replayed),
                "{mine:?} {theirs:?}"
            );
            assert!(w.is_marked(seq));
            assert_eq!(w.mark(seq), Err(ReplayError::Replayed));
        }
        assert_eq!(w.top(), 40);
    });
}

/// Same race on a pristine word far ahead (the word still holds its initial all-zero value).
#[test]
fn same_seq_pristine_word() {
    loom::model(|| {
        let w = window(&[]);
        let w2 = w.clone();
        let h = thread::spawn(move || w2.mark(1000));
        let mine = w.mark(1000);
        let theirs = h.join().unwrap();
        assert_eq!([mine, theirs].iter().filter(|r| r.is_ok()).count(), 1);
        assert_eq!(w.top(), 1000);
        assert_eq!(w.mark(1000), Err(ReplayError::Replayed));
    });
}

/// (b) One thread slides the window far ahead while another marks an older number that stays
/// inside the window: the textbook "advance top, then clear the skipped words" scheme can lose
/// the second mark. Here neither mark is lost.
#[test]
fn slide_does_not_lose_concurrent_marks() {
    loom::model(|| {
        // Window 64, ring of 4 words (128 numbers). top = 100, window [37, 100].
        // Word 0 holds block 0 (1..3 marked); block 4 (128..159) also maps to word 0.
        let w = window(&[1, 2, 3, 100]);
        let wa = w.clone();
        let wb = w.clone();
        // A jumps to 150 (block 4, recycling word 0); window becomes [87, 150].
        let a = thread::spawn(move || wa.mark(150));
        // B marks 130: skipped by A's jump, same recycled word.
        let b = thread::spawn(move || wb.mark(130));
        // This thread marks 90: an older block (2) that stays inside the window.
        let c = w.mark(90);
        let ra = a.join().unwrap();
        let rb = b.join().unwrap();
        assert_eq!((ra, rb, c), (Ok(()), Ok(()), Ok(())));
        assert_eq!(w.top(), 150);
        for s in [90u64, 100, 130, 150] {
            assert!(w.is_marked(s), "{s} lost");
            assert_eq!(w.mark(s), Err(ReplayError::Replayed), "{s}");
        }
        // Block 0 left the window with the recycle.
        assert_eq!(w.mark(3), Err(ReplayError::TooOld));
    });
}

/// (b') A jump recycles the very word that holds the block another thread is marking into: that
/// mark may win or lose, but afterwards the number can never be accepted again.
#[test]
fn recycle_race_never_lets_a_replay_through() {
    loom::model(|| {
        // top = 60, window [-3, 60]; word 1 holds block 1 (32..63), 40 marked.
        let w = window(&[40, 60]);
        let wa = w.clone();
        // 170 is block 5 -> word 1; window becomes [107, 170], block 1 leaves it.
        let a = thread::spawn(move || wa.mark(170));
        let rb = w.mark(50);
        assert_eq!(a.join().unwrap(), Ok(()));
        assert!(
            rb == Ok(()) || rb == Err(ReplayError::TooOld),
            "unexpected {rb:?}"
        );
        assert_eq!(w.top(), 170);
        for s in [40u64, 50, 60] {
            assert_eq!(w.mark(s), Err(ReplayError::TooOld), "{s}");
        }
        assert_eq!(w.mark(170), Err(ReplayError::Replayed));
    });
}

/// (c) Three threads on a 64-number window, mixed: two race on 75, one of them then jumps far
/// ahead, a third marks 71 and checks 75.
#[test]
fn three_threads_mixed() {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(|| {
        let w = window(&[70]);
        let w1 = w.clone();
        let w2 = w.clone();
        let t1 = thread::spawn(move || (w1.mark(75), w1.mark(200)));
        let t2 = thread::spawn(move || w2.mark(75));
        let r71 = w.mark(71);
        let c75 = w.check(75);
        let (r75a, r200) = t1.join().unwrap();
        let r75b = t2.join().unwrap();

        assert_eq!(r200, Ok(()));
        assert_eq!(
            [r75a, r75b].iter().filter(|r| r.is_ok()).count(),
            1,
            "{r75a:?} {r75b:?}"
        );
        // 71 is only refused if the jump to 200 got there first.
        assert!(r71 == Ok(()) || r71 == Err(ReplayError::TooOld), "{r71:?}");
        assert_ne!(c75, Err(ReplayError::Zero));
        assert_eq!(w.top(), 200);
        assert!(w.is_marked(200));
        for s in [70u64, 71, 75] {
            assert_eq!(w.mark(s), Err(ReplayError::TooOld), "{s}");
        }
        assert_eq!(w.mark(200), Err(ReplayError::Replayed));
        assert_eq!(w.mark(199), Ok(()));
    });
}
