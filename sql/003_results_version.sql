-- 003: a per-law version for the live results (lib/results/).
--
-- vote_results.version goes up by one with every committed change the counting statement makes to
-- the row (lib/database/sql/count_votes.ts), and the same statement notifies the channel
-- vote_results_changed with the changed law ids and their versions. A client of the results stream
-- keeps, per law, the totals with the highest version: an event that arrives late or twice cannot
-- take a law's numbers back.
--
-- Rows that exist before this migration start at 0 (their counts stay as they are); a row's first
-- change by this service makes it 1. Adding a column with a constant default rewrites no row, and
-- every other reader of vote_results (the seed's results API and aggregator) names its columns, so
-- an added column changes nothing for them. The seed aggregator, if it writes again after a
-- rollback, leaves the version as it is: the results stream then shows its counts only after the
-- next change this service makes, or a reconnect's resynchronisation.

-- step: vote_results.version
ALTER TABLE vote_results ADD COLUMN IF NOT EXISTS version bigint NOT NULL DEFAULT 0;
