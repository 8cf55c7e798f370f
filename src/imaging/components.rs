//! Connected components of labelled voxels, with full connectivity (8
//! neighbours in a slice, 26 in a volume): lesions joined across slices,
//! instances of a class mask, enclosed air of a lung field.

/// Components of a grid `dims` = (columns, rows, slices), index
/// (k · rows + j) · cols + i. `class` says which voxels take part (`None`:
/// background); neighbours join when their classes are equal. Components come
/// in the order of their first voxel; each lists its voxels in visiting order.
pub fn components<C: Copy + PartialEq>(dims: [usize; 3], class: impl Fn(usize) -> Option<C>) -> Vec<(C, Vec<usize>)> {
    let [cols, rows, slices] = dims;
    let plane = rows * cols;
    let n = plane * slices;
    let mut seen = vec![false; n];
    let mut out = Vec::new();
    let mut stack = Vec::new();
    for start in 0..n {
        let Some(c) = (!seen[start]).then(|| class(start)).flatten() else { continue };
        seen[start] = true;
        stack.push(start);
        let mut members = Vec::new();
        while let Some(p) = stack.pop() {
            members.push(p);
            let (k, j, i) = ((p / plane) as i64, ((p % plane) / cols) as i64, (p % cols) as i64);
            for dk in -1..=1i64 {
                for dj in -1..=1i64 {
                    for di in -1..=1i64 {
                        let (kk, jj, ii) = (k + dk, j + dj, i + di);
                        if kk < 0 || jj < 0 || ii < 0 || kk as usize >= slices || jj as usize >= rows || ii as usize >= cols {
                            continue;
                        }
                        let q = kk as usize * plane + jj as usize * cols + ii as usize;
                        if !seen[q] && class(q) == Some(c) {
                            seen[q] = true;
                            stack.push(q);
                        }
                    }
                }
            }
        }
        out.push((c, members));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagonal_contact_joins_and_classes_stay_apart() {
        // 4 x 3 x 2: class 1 at (0,0,0) and (1,1,1) (diagonal across slices); class 2 at (2,1,1)
        let mut v = [0u8; 24];
        v[0] = 1;
        v[12 + 4 + 1] = 1;
        v[12 + 4 + 2] = 2;
        let c = components([4, 3, 2], |p| (v[p] > 0).then_some(v[p]));
        assert_eq!(c, vec![(1, vec![0, 17]), (2, vec![18])]);
        // one slice: 8-connectivity
        let flat = components([4, 3, 1], |p| (p == 0 || p == 5).then_some(()));
        assert_eq!(flat.len(), 1);
    }
}
