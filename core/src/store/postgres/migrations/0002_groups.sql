-- The groups an identity's IdP gave at its latest login; NULL: unknown (an IdP that signalled
-- an overage, or no login since groups were recorded), which group policies deny.
ALTER TABLE identities ADD COLUMN groups text[];
