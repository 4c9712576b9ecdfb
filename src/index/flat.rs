//! A read-optimised copy of the HNSW adjacency, searched without hnsw_rs.
//!
//! hnsw_rs stores each point behind an `Arc` with a lock per neighbour list and
//! allocates heap entries per candidate; its search ran at about a quarter of
//! hnswlib's queries per second on the same graph (`benches/ann.sh`). This copy holds
//! the same links in flat arrays indexed by row: layer 0 as one CSR array, the few
//! points of the upper layers in a map. Vectors are read from the memory-mapped vector
//! file, so nothing is duplicated but the links.

use super::distance::dot;
use crate::store::VectorView;
use hnsw_rs::prelude::{Distance, Hnsw};
use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// Links of every point of an HNSW graph at one moment.
#[derive(Debug, Default)]
pub(crate) struct FlatGraph {
    /// `links0[offsets[r]..offsets[r + 1]]` are the layer-0 neighbours of row `r`.
    offsets: Vec<u32>,
    links0: Vec<u32>,
    /// Row -> neighbours on layers 1..=level (index 0 is layer 1).
    upper: HashMap<u32, Vec<Vec<u32>>>,
    entry: Option<(u32, usize)>,
    points: usize,
}

/// A distance ordered by `total_cmp`, so heaps have a total order (and equality
/// agrees with it, unlike f32's).
#[derive(Clone, Copy)]
struct D(f32);
impl PartialEq for D {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o).is_eq()
    }
}
impl Eq for D {}
impl PartialOrd for D {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for D {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0)
    }
}

/// Points with fewer links into them than this get the reverse of their own links.
const MIN_IN_LINKS: u32 = 8;

thread_local! {
    /// Visited marks per row, reset by bumping the epoch instead of clearing.
    static VISITED: RefCell<(Vec<u32>, u32)> = const { RefCell::new((Vec::new(), 0)) };
}

impl FlatGraph {
    /// Copies the links of `hnsw` (whose data ids are rows).
    pub(crate) fn from_hnsw<D2: Distance<f32> + Send + Sync>(hnsw: &Hnsw<'_, f32, D2>) -> Self {
        let mut per_row: Vec<(u32, Vec<Vec<u32>>)> = Vec::with_capacity(hnsw.get_nb_point());
        let mut entry: Option<(u32, usize)> = None;
        for p in hnsw.get_point_indexation() {
            let row = p.get_origin_id() as u32;
            let layers: Vec<Vec<u32>> = p.get_neighborhood_id().into_iter().map(|l| l.into_iter().map(|n| n.d_id as u32).collect()).collect();
            let level = p.get_point_id().0 as usize;
            if entry.is_none_or(|(_, l)| level > l) {
                entry = Some((row, level));
            }
            per_row.push((row, layers));
        }
        let max_row = per_row.iter().map(|(r, _)| *r as usize + 1).max().unwrap_or(0);
        let mut counts = vec![0u32; max_row + 1];
        for (r, l) in &per_row {
            counts[*r as usize + 1] = l.first().map_or(0, |v| v.len() as u32);
        }
        for i in 1..counts.len() {
            counts[i] += counts[i - 1];
        }
        let offsets = counts;
        let mut links0 = vec![0u32; *offsets.last().unwrap_or(&0) as usize];
        let mut upper = HashMap::new();
        let points = per_row.len();
        let rows: Vec<u32> = per_row.iter().map(|(r, _)| *r).collect();
        for (r, mut layers) in per_row {
            if let Some(l0) = layers.first() {
                let o = offsets[r as usize] as usize;
                links0[o..o + l0.len()].copy_from_slice(l0);
            }
            // hnsw_rs keeps a neighbour list for every layer; only those up to the
            // point's own level can be non-empty.
            while layers.last().is_some_and(|l| l.is_empty()) {
                layers.pop();
            }
            if layers.len() > 1 {
                layers.remove(0);
                upper.insert(r, layers);
            }
        }
        let mut g = Self { offsets, links0, upper, entry, points };
        g.reach_every_point(&rows);
        g
    }

    /// Rows reachable on layer 0 from the entry point, with `extra` links added.
    fn reachable(&self, extra: &HashMap<u32, Vec<u32>>) -> Vec<bool> {
        let mut seen = vec![false; self.offsets.len()];
        let Some((entry, _)) = self.entry else { return seen };
        let mut stack = vec![entry];
        seen[entry as usize] = true;
        while let Some(r) = stack.pop() {
            for &n in self.links0(r).iter().chain(extra.get(&r).into_iter().flatten()) {
                if !std::mem::replace(&mut seen[n as usize], true) {
                    stack.push(n);
                }
            }
        }
        seen
    }

    /// Makes every point reachable from the entry point on layer 0.
    ///
    /// HNSW's neighbour selection drops a candidate that is no closer to the new point
    /// than to a neighbour already kept. Among exact or near duplicates that drops
    /// almost every link *into* a point, so some points can be reached from nowhere:
    /// no query finds them, at any `ef`. Each unreachable point gets the reverse of its
    /// own out-links (its neighbours link back to it). A group whose out-links all stay
    /// inside it gets one link from the entry point. Points with fewer than
    /// [`MIN_IN_LINKS`] links into them get their reverse links too: reachable is not
    /// enough among near duplicates, where a beam of 64 must still get to the one point
    /// it looks for (`benches/reachability.rs`: 968 of 1,000 near duplicates were their
    /// own first hit without, 1,000 with). The repair is a function of
    /// hnsw_rs's graph, so it is redone whenever the links are copied, and nothing of
    /// it is persisted.
    fn reach_every_point(&mut self, rows: &[u32]) {
        let mut extra: HashMap<u32, Vec<u32>> = HashMap::new();
        let Some((entry, _)) = self.entry else { return };
        let mut indegree = vec![0u32; self.offsets.len()];
        for &n in &self.links0 {
            indegree[n as usize] += 1;
        }
        for &r in rows {
            if indegree[r as usize] < MIN_IN_LINKS {
                for &n in self.links0(r) {
                    if !self.links0(n).contains(&r) {
                        extra.entry(n).or_default().push(r);
                    }
                }
            }
        }
        loop {
            let seen = self.reachable(&extra);
            let lost: Vec<u32> = rows.iter().copied().filter(|&r| !seen[r as usize]).collect();
            if lost.is_empty() {
                break;
            }
            let before = extra.values().map(Vec::len).sum::<usize>();
            for &r in &lost {
                for &n in self.links0(r) {
                    let back = extra.entry(n).or_default();
                    if !back.contains(&r) && !self.links0(n).contains(&r) {
                        back.push(r);
                    }
                }
            }
            if extra.values().map(Vec::len).sum::<usize>() == before {
                // Every lost point already has its reverse links: the group is closed.
                extra.entry(entry).or_default().push(lost[0]);
            }
        }
        if extra.is_empty() {
            return;
        }
        let n = self.offsets.len() - 1;
        let mut offsets = vec![0u32; n + 1];
        for r in 0..n {
            offsets[r + 1] = offsets[r] + (self.links0(r as u32).len() + extra.get(&(r as u32)).map_or(0, Vec::len)) as u32;
        }
        let mut links0 = Vec::with_capacity(offsets[n] as usize);
        for r in 0..n as u32 {
            links0.extend_from_slice(self.links0(r));
            links0.extend(extra.get(&r).into_iter().flatten());
        }
        self.offsets = offsets;
        self.links0 = links0;
    }

    /// Points covered.
    pub(crate) fn len(&self) -> usize {
        self.points
    }

    fn links0(&self, r: u32) -> &[u32] {
        let r = r as usize;
        if r + 1 >= self.offsets.len() {
            return &[];
        }
        &self.links0[self.offsets[r] as usize..self.offsets[r + 1] as usize]
    }

    /// The `ef` nearest rows found by the HNSW walk, as (distance, row), nearest first.
    pub(crate) fn search(&self, view: &VectorView, q: &[f32], ef: usize) -> Vec<(f32, u32)> {
        let Some((mut cur, level)) = self.entry else { return Vec::new() };
        let dist = |r: u32| 1.0 - dot(q, view.vector(r as usize));
        let mut best = dist(cur);
        for layer in (1..=level).rev() {
            loop {
                let mut moved = false;
                if let Some(ls) = self.upper.get(&cur).and_then(|u| u.get(layer - 1)) {
                    for &n in ls {
                        let d = dist(n);
                        if d < best {
                            (best, cur, moved) = (d, n, true);
                        }
                    }
                }
                if !moved {
                    break;
                }
            }
        }
        VISITED.with(|v| {
            let (marks, epoch) = &mut *v.borrow_mut();
            if marks.len() < view.len() {
                marks.resize(view.len(), 0);
            }
            *epoch = epoch.wrapping_add(1);
            if *epoch == 0 {
                marks.iter_mut().for_each(|m| *m = 0);
                *epoch = 1;
            }
            let epoch = *epoch;
            let mut cand: BinaryHeap<Reverse<(D, u32)>> = BinaryHeap::with_capacity(ef * 4);
            let mut res: BinaryHeap<(D, u32)> = BinaryHeap::with_capacity(ef + 1);
            let mut fresh: Vec<u32> = Vec::with_capacity(64);
            marks[cur as usize] = epoch;
            cand.push(Reverse((D(best), cur)));
            res.push((D(best), cur));
            // The entry point seeds the beam too: the repair in `reach_every_point`
            // makes every point reachable from it, not from wherever the descent ends.
            if let Some((e, _)) = self.entry {
                if e != cur {
                    marks[e as usize] = epoch;
                    let de = dist(e);
                    cand.push(Reverse((D(de), e)));
                    res.push((D(de), e));
                    if res.len() > ef {
                        res.pop();
                    }
                }
            }
            while let Some(Reverse((D(d), c))) = cand.pop() {
                if res.len() >= ef && d > res.peek().unwrap().0 .0 {
                    break;
                }
                // Mark and prefetch all unvisited neighbours first, then score them:
                // the loads overlap instead of stalling one after another.
                fresh.clear();
                for &n in self.links0(c) {
                    let m = &mut marks[n as usize];
                    if *m != epoch {
                        *m = epoch;
                        view.prefetch(n as usize);
                        fresh.push(n);
                    }
                }
                for &n in &fresh {
                    let dn = dist(n);
                    if res.len() < ef || dn < res.peek().unwrap().0 .0 {
                        cand.push(Reverse((D(dn), n)));
                        res.push((D(dn), n));
                        if res.len() > ef {
                            res.pop();
                        }
                    }
                }
            }
            let mut out: Vec<(f32, u32)> = res.into_iter().map(|(D(d), r)| (d, r)).collect();
            out.sort_by(|a, b| a.0.total_cmp(&b.0));
            out
        })
    }
}
