//! Short parallel jobs for the collector's work after a run's last packet.
//!
//! Why: once the last packet is counted the workers are idle, and what is
//! left (rolling tasks up, picking the rows the run totals keep) is the
//! run's serial tail unless it is spread over the cores.

use std::sync::Mutex;

/// Jobs with their index in the caller's list: one thread's share.
type Share<F> = Vec<(usize, F)>;

/// Runs `jobs`, each given with its rough cost (rows to scan, say), on at
/// most one thread per core and returns their results in job order. The
/// costliest jobs are dealt first, each to the thread with the least cost
/// so far; the calling thread runs the first share itself. A share whose
/// thread the system refuses runs on the calling thread: jobs are never
/// lost, only serialised.
pub(crate) fn run_jobs<T, F>(name: &str, jobs: Vec<(u64, F)>) -> Vec<T>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cores.min(jobs.len()).max(1);
    let mut jobs: Vec<(usize, u64, F)> = jobs
        .into_iter()
        .enumerate()
        .map(|(i, (cost, job))| (i, cost, job))
        .collect();
    jobs.sort_by_key(|&(_, cost, _)| std::cmp::Reverse(cost));
    let mut shares: Vec<(u64, Share<F>)> = (0..threads).map(|_| (0, Vec::new())).collect();
    for (i, cost, job) in jobs {
        let share = shares
            .iter_mut()
            .min_by_key(|(load, _)| *load)
            .expect("at least one share");
        share.0 += cost;
        share.1.push((i, job));
    }
    let run = |share: Share<F>| -> Vec<(usize, T)> {
        share.into_iter().map(|(i, job)| (i, job())).collect()
    };
    // A spawned thread takes its share out of its cell; if the spawn is
    // refused, the share is still there for the calling thread.
    let mut shares = shares.into_iter().map(|(_, share)| share);
    let own = shares.next().unwrap_or_default();
    let cells: Vec<Mutex<Option<Share<F>>>> = shares.map(|share| Mutex::new(Some(share))).collect();
    let mut done: Vec<(usize, T)> = std::thread::scope(|scope| {
        let spawned: Vec<_> = cells
            .iter()
            .map(|cell| {
                std::thread::Builder::new()
                    .name(name.to_string())
                    .spawn_scoped(scope, || run(take(cell)))
            })
            .collect();
        let mut done = run(own);
        for (cell, thread) in cells.iter().zip(spawned) {
            match thread {
                Ok(t) => done.extend(t.join().unwrap_or_else(|e| std::panic::resume_unwind(e))),
                Err(_) => done.extend(run(take(cell))),
            }
        }
        done
    });
    done.sort_unstable_by_key(|&(i, _)| i);
    done.into_iter().map(|(_, t)| t).collect()
}

/// The share left in `cell` (none if a thread already took it).
fn take<S: Default>(cell: &Mutex<Option<S>>) -> S {
    cell.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_job_runs_once_and_results_keep_job_order() {
        for n in [0, 1, 2, 5, 17] {
            let ran = std::sync::atomic::AtomicUsize::new(0);
            let jobs: Vec<(u64, _)> = (0..n)
                .map(|i| {
                    let ran = &ran;
                    ((i * 7 % 5) as u64, move || {
                        ran.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        i * 10
                    })
                })
                .collect();
            let got = run_jobs("ns-test", jobs);
            assert_eq!(got, (0..n).map(|i| i * 10).collect::<Vec<_>>());
            assert_eq!(ran.into_inner(), n);
        }
    }
}
