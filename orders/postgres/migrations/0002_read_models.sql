-- Projectors' checkpoints and the read models, written in one transaction per
-- Views.Apply.
CREATE TABLE checkpoints (
	projection text   PRIMARY KEY,
	position   bigint NOT NULL,
	updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE orders_view (
	id              text   PRIMARY KEY,
	customer_id     text   NOT NULL,
	status          text   NOT NULL,
	items           jsonb  NOT NULL,
	total           bigint NOT NULL,
	payment_method  text   NOT NULL,
	tracking_number text   NOT NULL,
	cancel_reason   text   NOT NULL,
	version         bigint NOT NULL,
	created_at      bigint NOT NULL, -- Unix nanoseconds
	updated_at      bigint NOT NULL  -- Unix nanoseconds
);
CREATE INDEX orders_view_customer ON orders_view (customer_id, id);

CREATE TABLE sales_summary (
	id        integer PRIMARY KEY CHECK (id = 1),
	orders    bigint NOT NULL,
	created   bigint NOT NULL,
	paid      bigint NOT NULL,
	shipped   bigint NOT NULL,
	cancelled bigint NOT NULL,
	revenue   bigint NOT NULL
);
