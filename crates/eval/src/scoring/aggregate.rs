//! Aggregations of row scores, as llama-stack's `aggregation_utils.py` computes them.
//! Where Python would raise (a sum over text, a division by zero, a missing `weight`),
//! the aggregation is refused with a message instead.

use serde_json::{Map, Value, json};

use super::ScoringError;
use super::functions::AggregationFn;
use super::pystr;
use super::rows::Row;

/// `{name: result}` for each of `functions`, in order (a repeated one once, as a dict).
pub fn aggregate(
    rows: &[Row],
    functions: &[AggregationFn],
) -> Result<Map<String, Value>, ScoringError> {
    let mut out = Map::new();
    for &f in functions {
        let v = match f {
            AggregationFn::Accuracy => accuracy(rows)?,
            AggregationFn::Average => average(rows)?,
            AggregationFn::WeightedAverage => weighted_average(rows)?,
            AggregationFn::Median => median(rows)?,
            AggregationFn::CategoricalCount => categorical_count(rows),
        };
        out.insert(f.as_str().to_string(), v);
    }
    Ok(out)
}

fn error(function: AggregationFn, message: impl Into<String>) -> ScoringError {
    ScoringError::Aggregate {
        function: function.as_str(),
        message: message.into(),
    }
}

/// A score as a number: numbers, and booleans as 0 / 1 (Python sums them so).
fn number(f: AggregationFn, i: usize, v: &Value) -> Result<f64, ScoringError> {
    match v {
        Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| error(f, format!("row {i}: score out of range"))),
        Value::Bool(b) => Ok(if *b { 1.0 } else { 0.0 }),
        other => Err(error(
            f,
            format!("row {i}: the score {other} is not a number"),
        )),
    }
}

fn score(r: &Row) -> &Value {
    r.get("score").unwrap_or(&Value::Null)
}

/// `{accuracy, num_correct, num_total}`: the sum of the scores over their count.
pub fn accuracy(rows: &[Row]) -> Result<Value, ScoringError> {
    let f = AggregationFn::Accuracy;
    if rows.is_empty() {
        return Err(error(f, "there are no rows to aggregate"));
    }
    let mut sum = 0.0;
    for (i, r) in rows.iter().enumerate() {
        sum += number(f, i, score(r))?;
    }
    Ok(json!({
        "accuracy": sum / rows.len() as f64,
        "num_correct": sum,
        "num_total": rows.len(),
    }))
}

/// `{average}` over the scores that are not null.
pub fn average(rows: &[Row]) -> Result<Value, ScoringError> {
    let f = AggregationFn::Average;
    let mut sum = 0.0;
    let mut n = 0usize;
    for (i, r) in rows.iter().enumerate() {
        if !score(r).is_null() {
            sum += number(f, i, score(r))?;
            n += 1;
        }
    }
    if n == 0 {
        return Err(error(f, "no row has a score that is not null"));
    }
    Ok(json!({ "average": sum / n as f64 }))
}

/// `{weighted_average}`: Σ score·weight over the rows with both, over Σ weight of the
/// rows with a weight. Every score row needs a `weight` (null allowed).
pub fn weighted_average(rows: &[Row]) -> Result<Value, ScoringError> {
    let f = AggregationFn::WeightedAverage;
    let mut num = 0.0;
    let mut den = 0.0;
    for (i, r) in rows.iter().enumerate() {
        let w = r.get("weight").ok_or_else(|| {
            error(
                f,
                format!("score row {i} has no 'weight' (this scoring function gives none)"),
            )
        })?;
        if w.is_null() {
            continue;
        }
        let w = number(f, i, w)?;
        if !score(r).is_null() {
            num += number(f, i, score(r))? * w;
        }
        den += w;
    }
    if den == 0.0 {
        return Err(error(f, "the weights sum to zero"));
    }
    Ok(json!({ "weighted_average": num / den }))
}

/// `{median}` of the scores that are not null (null when there are none): the middle
/// one, or the mean of the two middle ones. Text scores (a judge's ratings) have a median
/// only when there is a middle one, as with Python's `statistics.median`.
pub fn median(rows: &[Row]) -> Result<Value, ScoringError> {
    let f = AggregationFn::Median;
    let present: Vec<&Value> = rows.iter().map(score).filter(|v| !v.is_null()).collect();
    if present.is_empty() {
        return Ok(json!({ "median": null }));
    }
    let n = present.len();
    if present.iter().all(|v| v.is_string()) {
        let mut t: Vec<&str> = present.iter().filter_map(|v| v.as_str()).collect();
        t.sort_unstable();
        if n % 2 == 1 {
            return Ok(json!({ "median": t[n / 2] }));
        }
        return Err(error(
            f,
            "the scores are text and their count is even: there is no middle one to take \
             (Python's statistics.median cannot average text)",
        ));
    }
    let mut x = present
        .iter()
        .enumerate()
        .map(|(i, v)| number(f, i, v))
        .collect::<Result<Vec<f64>, _>>()?;
    x.sort_by(f64::total_cmp);
    let m = if n % 2 == 1 {
        x[n / 2]
    } else {
        (x[n / 2 - 1] + x[n / 2]) / 2.0
    };
    // Python keeps an odd count's middle value as it was (an int stays an int).
    let v = if n % 2 == 1 {
        present
            .iter()
            .find(|v| v.as_f64() == Some(m) && v.is_i64())
            .map_or(json!(m), |v| (*v).clone())
    } else {
        json!(m)
    };
    Ok(json!({ "median": v }))
}

/// `{categorical_count: {str(score): count}}`, keys sorted as Python sorts text.
pub fn categorical_count(rows: &[Row]) -> Value {
    let mut keys: Vec<String> = rows.iter().map(|r| pystr::py_str(score(r))).collect();
    keys.sort();
    let mut counts = Map::new();
    for k in keys {
        let n = counts.get(&k).and_then(Value::as_u64).unwrap_or(0);
        counts.insert(k, json!(n + 1));
    }
    json!({ "categorical_count": counts })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn rows(scores: &[Value]) -> Vec<Row> {
        scores
            .iter()
            .map(|s| json!({"score": s}).as_object().cloned().unwrap())
            .collect()
    }

    #[test]
    fn accuracy_counts_correct() {
        let r = rows(&[json!(1.0), json!(0.0), json!(1.0), json!(1.0)]);
        assert_eq!(
            accuracy(&r).unwrap(),
            json!({"accuracy": 0.75, "num_correct": 3.0, "num_total": 4})
        );
        assert!(accuracy(&[]).is_err());
        assert!(accuracy(&rows(&[json!("4")])).is_err());
    }

    #[test]
    fn average_and_median_skip_nulls() {
        let r = rows(&[json!(1.0), json!(null), json!(4.0), json!(2.5)]);
        assert_eq!(average(&r).unwrap(), json!({"average": 2.5}));
        assert_eq!(median(&r).unwrap(), json!({"median": 2.5}));
        let r = rows(&[json!(3), json!(1), json!(2), json!(10)]);
        assert_eq!(median(&r).unwrap(), json!({"median": 2.5}));
        let r = rows(&[json!(3), json!(1), json!(2)]);
        assert_eq!(median(&r).unwrap(), json!({"median": 2}));
        assert_eq!(
            median(&rows(&[json!(null)])).unwrap(),
            json!({"median": null})
        );
        assert_eq!(
            median(&rows(&[json!("4"), json!("10"), json!("2")])).unwrap(),
            json!({"median": "2"})
        );
        assert!(median(&rows(&[json!("4"), json!("2")])).is_err());
        assert!(average(&rows(&[json!(null)])).is_err());
    }

    #[test]
    fn weighted_average_needs_weights() {
        let mut r = rows(&[json!(1.0), json!(0.0), json!(null)]);
        for (row, w) in r.iter_mut().zip([json!(3), json!(1), json!(5)]) {
            row.insert("weight".into(), w);
        }
        // (1·3 + 0·1) / (3 + 1 + 5)
        assert_eq!(
            weighted_average(&r).unwrap(),
            json!({"weighted_average": 3.0 / 9.0})
        );
        assert!(weighted_average(&rows(&[json!(1.0)])).is_err());
    }

    #[test]
    fn categorical_count_keys_are_python_str() {
        let r = rows(&[
            json!(1.0),
            json!("B"),
            json!(null),
            json!(1.0),
            json!(0.0),
            json!("A"),
        ]);
        assert_eq!(
            categorical_count(&r),
            json!({"categorical_count": {"0.0": 1, "1.0": 2, "A": 1, "B": 1, "None": 1}})
        );
    }

    #[test]
    fn aggregate_in_order() {
        let r = rows(&[json!(1.0), json!(0.0)]);
        let a = aggregate(&r, &[AggregationFn::Median, AggregationFn::Accuracy]).unwrap();
        assert_eq!(a.keys().collect::<Vec<_>>(), ["median", "accuracy"]);
        assert_eq!(a["median"], json!({"median": 0.5}));
    }
}
