//! Lance's query types in their protobuf form, both ways: full-text queries
//! ([`FtsQuery`] ⇄ [`FullTextQuery`]) and distance types. Every kind and field of lance's
//! full-text query has its own protobuf field, so nothing travels as JSON text.

use lance_index::scalar::inverted::DocumentGranularity as LanceGranularity;
use lance_index::scalar::inverted::query::{
    BooleanQuery, BoostQuery, CombinedFieldsQuery, FtsQuery, MatchQuery, MultiMatchQuery, Operator, PhraseQuery,
};
use lance_linalg::distance::DistanceType as LanceDistance;
use lancefleet_proto::v1::full_text_query::Query;
use lancefleet_proto::v1::{
    BooleanQuery as WireBoolean, BoostQuery as WireBoost, CombinedFieldsQuery as WireCombined, DistanceType,
    DocumentGranularity, FullTextQuery, MatchQuery as WireMatch, MultiMatchQuery as WireMultiMatch,
    PhraseQuery as WirePhrase, TermOperator, WeightedColumn,
};

use crate::error::{EngineError, Result};

/// The protobuf form of `query`.
pub fn full_text_to_wire(query: &FtsQuery) -> FullTextQuery {
    let query = match query {
        FtsQuery::Match(matched) => Query::Match(match_to_wire(matched)),
        FtsQuery::Phrase(phrase) => Query::Phrase(WirePhrase {
            column: phrase.column.clone(),
            terms: phrase.terms.clone(),
            slop: phrase.slop,
            granularity: granularity_to_wire(phrase.document_granularity) as i32,
        }),
        FtsQuery::Boost(boost) => Query::Boost(Box::new(WireBoost {
            positive: Some(Box::new(full_text_to_wire(&boost.positive))),
            negative: Some(Box::new(full_text_to_wire(&boost.negative))),
            negative_boost: boost.negative_boost,
        })),
        FtsQuery::MultiMatch(multi) => {
            Query::MultiMatch(WireMultiMatch { match_queries: multi.match_queries.iter().map(match_to_wire).collect() })
        }
        FtsQuery::CombinedFields(combined) => Query::CombinedFields(WireCombined {
            terms: combined.terms().to_string(),
            columns: combined
                .weighted_columns()
                .map(|(column, weight)| WeightedColumn { column: column.to_string(), weight })
                .collect(),
            operator: operator_to_wire(combined.operator()) as i32,
        }),
        FtsQuery::Boolean(boolean) => Query::Boolean(WireBoolean {
            should: boolean.should.iter().map(full_text_to_wire).collect(),
            must: boolean.must.iter().map(full_text_to_wire).collect(),
            must_not: boolean.must_not.iter().map(full_text_to_wire).collect(),
        }),
    };
    FullTextQuery { query: Some(query) }
}

/// Lance's query from its protobuf form; a message without a query (or a part lance
/// refuses, such as duplicate combined columns) is invalid input.
pub fn full_text_from_wire(wire: &FullTextQuery) -> Result<FtsQuery> {
    let invalid = |what: &str| EngineError::invalid_input(format!("invalid full-text query: {what}"));
    Ok(match wire.query.as_ref().ok_or_else(|| invalid("no query"))? {
        Query::Match(matched) => FtsQuery::Match(match_from_wire(matched)),
        Query::Phrase(phrase) => FtsQuery::Phrase(PhraseQuery {
            column: phrase.column.clone(),
            terms: phrase.terms.clone(),
            slop: phrase.slop,
            document_granularity: granularity_from_wire(phrase.granularity),
        }),
        Query::Boost(boost) => {
            let positive = boost.positive.as_deref().ok_or_else(|| invalid("a boost query without positive"))?;
            let negative = boost.negative.as_deref().ok_or_else(|| invalid("a boost query without negative"))?;
            FtsQuery::Boost(BoostQuery {
                positive: Box::new(full_text_from_wire(positive)?),
                negative: Box::new(full_text_from_wire(negative)?),
                negative_boost: boost.negative_boost,
            })
        }
        Query::MultiMatch(multi) => FtsQuery::MultiMatch(MultiMatchQuery {
            match_queries: multi.match_queries.iter().map(match_from_wire).collect(),
        }),
        Query::CombinedFields(combined) => {
            let columns = combined.columns.iter().map(|column| column.column.clone()).collect();
            let weights = combined.columns.iter().map(|column| column.weight).collect();
            let query = CombinedFieldsQuery::try_new(combined.terms.clone(), columns)
                .and_then(|query| query.try_with_boosts(weights))
                .map_err(|error| invalid(&error.to_string()))?;
            FtsQuery::CombinedFields(query.with_operator(operator_from_wire(combined.operator)))
        }
        Query::Boolean(boolean) => {
            let all = |queries: &[FullTextQuery]| queries.iter().map(full_text_from_wire).collect::<Result<Vec<_>>>();
            FtsQuery::Boolean(BooleanQuery {
                should: all(&boolean.should)?,
                must: all(&boolean.must)?,
                must_not: all(&boolean.must_not)?,
            })
        }
    })
}

fn match_to_wire(matched: &MatchQuery) -> WireMatch {
    WireMatch {
        column: matched.column.clone(),
        terms: matched.terms.clone(),
        boost: matched.boost,
        fuzziness: matched.fuzziness,
        max_expansions: matched.max_expansions as u64,
        operator: operator_to_wire(matched.operator) as i32,
        prefix_length: matched.prefix_length,
        granularity: granularity_to_wire(matched.document_granularity) as i32,
    }
}

fn match_from_wire(wire: &WireMatch) -> MatchQuery {
    MatchQuery {
        column: wire.column.clone(),
        terms: wire.terms.clone(),
        boost: wire.boost,
        fuzziness: wire.fuzziness,
        max_expansions: usize::try_from(wire.max_expansions).unwrap_or(usize::MAX),
        operator: operator_from_wire(wire.operator),
        prefix_length: wire.prefix_length,
        document_granularity: granularity_from_wire(wire.granularity),
    }
}

fn operator_to_wire(operator: Operator) -> TermOperator {
    match operator {
        Operator::And => TermOperator::And,
        Operator::Or => TermOperator::Or,
    }
}

fn operator_from_wire(operator: i32) -> Operator {
    match TermOperator::try_from(operator) {
        Ok(TermOperator::And) => Operator::And,
        _ => Operator::Or,
    }
}

fn granularity_to_wire(granularity: Option<LanceGranularity>) -> DocumentGranularity {
    match granularity {
        None => DocumentGranularity::Unspecified,
        Some(LanceGranularity::Row) => DocumentGranularity::Row,
        Some(LanceGranularity::ListElement) => DocumentGranularity::ListElement,
    }
}

fn granularity_from_wire(granularity: i32) -> Option<LanceGranularity> {
    match DocumentGranularity::try_from(granularity) {
        Ok(DocumentGranularity::Row) => Some(LanceGranularity::Row),
        Ok(DocumentGranularity::ListElement) => Some(LanceGranularity::ListElement),
        Ok(DocumentGranularity::Unspecified) | Err(_) => None,
    }
}

/// The distance type a client names (`l2`, `euclidean`, `cosine`, `dot`, `hamming`, in any
/// case, as lance reads them); an unknown name is invalid input.
pub fn distance_type(name: &str) -> Result<DistanceType> {
    let distance = LanceDistance::try_from(name).map_err(|_| {
        EngineError::invalid_input(format!("unknown distance type '{name}'; use l2, cosine, dot or hamming"))
    })?;
    Ok(match distance {
        LanceDistance::L2 => DistanceType::L2,
        LanceDistance::Cosine => DistanceType::Cosine,
        LanceDistance::Dot => DistanceType::Dot,
        LanceDistance::Hamming => DistanceType::Hamming,
    })
}

/// Lance's distance type for the protobuf one; `None` leaves lance's default.
pub fn lance_distance(distance: i32) -> Result<Option<LanceDistance>> {
    match DistanceType::try_from(distance) {
        Ok(DistanceType::Unspecified) => Ok(None),
        Ok(DistanceType::L2) => Ok(Some(LanceDistance::L2)),
        Ok(DistanceType::Cosine) => Ok(Some(LanceDistance::Cosine)),
        Ok(DistanceType::Dot) => Ok(Some(LanceDistance::Dot)),
        Ok(DistanceType::Hamming) => Ok(Some(LanceDistance::Hamming)),
        Err(_) => Err(EngineError::invalid_input(format!("unknown distance type {distance} on the wire"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(query: FtsQuery) {
        let wire = full_text_to_wire(&query);
        let encoded = prost::Message::encode_to_vec(&wire);
        let decoded: FullTextQuery = prost::Message::decode(encoded.as_slice()).expect("decodes");
        assert_eq!(full_text_from_wire(&decoded).expect("converts back"), query);
    }

    #[test]
    fn every_kind_of_full_text_query_survives_the_wire() {
        let matched = MatchQuery::new("hello world".into())
            .with_column(Some("text".into()))
            .with_boost(2.5)
            .with_fuzziness(None)
            .with_max_expansions(7)
            .with_operator(Operator::And)
            .with_prefix_length(2)
            .with_document_granularity(LanceGranularity::ListElement);
        round_trip(FtsQuery::Match(matched.clone()));
        round_trip(FtsQuery::Match(MatchQuery::new("x".into())));
        let phrase = PhraseQuery::new("hello world".into()).with_column(Some("text".into())).with_slop(3);
        round_trip(FtsQuery::Phrase(phrase.clone()));
        round_trip(FtsQuery::Boost(BoostQuery::new(
            FtsQuery::Match(matched.clone()),
            FtsQuery::Phrase(phrase.clone()),
            Some(0.3),
        )));
        let multi = MultiMatchQuery::try_new("a b".into(), vec!["title".into(), "body".into()]).expect("valid");
        round_trip(FtsQuery::MultiMatch(multi.try_with_boosts(vec![1.0, 3.0]).expect("valid")));
        let combined = CombinedFieldsQuery::try_new("a b".into(), vec!["title".into(), "body".into()])
            .and_then(|query| query.try_with_boosts(vec![2.0, 1.0]))
            .expect("valid")
            .with_operator(Operator::And);
        round_trip(FtsQuery::CombinedFields(combined));
        let boolean = BooleanQuery::new([
            (lance_index::scalar::inverted::query::Occur::Must, FtsQuery::Match(matched)),
            (lance_index::scalar::inverted::query::Occur::Should, FtsQuery::Phrase(phrase.clone())),
            (lance_index::scalar::inverted::query::Occur::MustNot, FtsQuery::Phrase(phrase)),
        ]);
        round_trip(FtsQuery::Boolean(boolean));
    }

    #[test]
    fn malformed_wire_queries_are_invalid_input() {
        assert!(full_text_from_wire(&FullTextQuery { query: None }).is_err());
        let headless = FullTextQuery { query: Some(Query::Boost(Box::default())) };
        assert!(matches!(full_text_from_wire(&headless), Err(EngineError::InvalidInput { .. })));
        let duplicate = WireCombined {
            terms: "a".into(),
            columns: vec![
                WeightedColumn { column: "t".into(), weight: 1.0 },
                WeightedColumn { column: "t".into(), weight: 1.0 },
            ],
            operator: 0,
        };
        let duplicate = FullTextQuery { query: Some(Query::CombinedFields(duplicate)) };
        assert!(matches!(full_text_from_wire(&duplicate), Err(EngineError::InvalidInput { .. })));
    }

    #[test]
    fn distance_types_by_name_and_on_the_wire() {
        assert_eq!(distance_type("Cosine").expect("known"), DistanceType::Cosine);
        assert_eq!(distance_type("euclidean").expect("lance's alias of l2"), DistanceType::L2);
        assert!(distance_type("manhattan").is_err());
        assert_eq!(lance_distance(DistanceType::Dot as i32).expect("known"), Some(LanceDistance::Dot));
        assert_eq!(lance_distance(0).expect("unset"), None);
        assert!(lance_distance(42).is_err());
    }
}
