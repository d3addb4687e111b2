CREATE TABLE "fine_tuning_jobs" (
	"id" text PRIMARY KEY NOT NULL,
	"seq" bigserial NOT NULL,
	"project_id" text NOT NULL,
	"created_at" bigint NOT NULL,
	"model" text NOT NULL,
	"base_model" text NOT NULL,
	"parent_model" text,
	"training_file" text NOT NULL,
	"validation_file" text,
	"status" text NOT NULL,
	"method" jsonb NOT NULL,
	"suffix" text,
	"seed" integer NOT NULL,
	"metadata" jsonb,
	"integrations" jsonb,
	"error" jsonb,
	"fine_tuned_model" text,
	"finished_at" bigint,
	"trained_tokens" bigint,
	"estimated_finish" bigint,
	"result_files" jsonb NOT NULL,
	"n_examples" integer,
	"epoch_tokens" bigint,
	"fair_rank" integer DEFAULT 0 NOT NULL,
	"attempts" integer DEFAULT 0 NOT NULL,
	"max_attempts" integer DEFAULT 3 NOT NULL,
	"lease_owner" text,
	"lease_expires_at" bigint,
	"create_fingerprint" text,
	CONSTRAINT "fine_tuning_jobs_seq_unique" UNIQUE("seq")
);
--> statement-breakpoint
CREATE TABLE "job_checkpoints" (
	"id" text PRIMARY KEY NOT NULL,
	"job_id" text NOT NULL,
	"created_at" bigint NOT NULL,
	"step_number" integer NOT NULL,
	"epoch" integer NOT NULL,
	"metrics" jsonb NOT NULL,
	"model_name" text NOT NULL,
	"blob_prefix" text NOT NULL,
	"files" jsonb NOT NULL,
	"deleted_at" bigint
);
--> statement-breakpoint
CREATE TABLE "job_events" (
	"id" text PRIMARY KEY NOT NULL,
	"seq" bigserial NOT NULL,
	"job_id" text NOT NULL,
	"created_at" bigint NOT NULL,
	"level" text NOT NULL,
	"message" text NOT NULL,
	"type" text NOT NULL,
	"data" jsonb,
	CONSTRAINT "job_events_seq_unique" UNIQUE("seq")
);
--> statement-breakpoint
CREATE TABLE "models" (
	"id" text PRIMARY KEY NOT NULL,
	"project_id" text NOT NULL,
	"job_id" text NOT NULL,
	"kind" text NOT NULL,
	"base_model" text NOT NULL,
	"blob_prefix" text NOT NULL,
	"files" jsonb NOT NULL,
	"created_at" bigint NOT NULL,
	"deleted_at" bigint
);
--> statement-breakpoint
CREATE TABLE "workers" (
	"id" text PRIMARY KEY NOT NULL,
	"name" text NOT NULL,
	"token_hash" text NOT NULL,
	"created_at" bigint NOT NULL,
	"last_seen_at" bigint,
	CONSTRAINT "workers_token_hash_unique" UNIQUE("token_hash")
);
--> statement-breakpoint
ALTER TABLE "fine_tuning_jobs" ADD CONSTRAINT "fine_tuning_jobs_project_id_projects_id_fk" FOREIGN KEY ("project_id") REFERENCES "public"."projects"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "job_checkpoints" ADD CONSTRAINT "job_checkpoints_job_id_fine_tuning_jobs_id_fk" FOREIGN KEY ("job_id") REFERENCES "public"."fine_tuning_jobs"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "job_events" ADD CONSTRAINT "job_events_job_id_fine_tuning_jobs_id_fk" FOREIGN KEY ("job_id") REFERENCES "public"."fine_tuning_jobs"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "models" ADD CONSTRAINT "models_project_id_projects_id_fk" FOREIGN KEY ("project_id") REFERENCES "public"."projects"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "models" ADD CONSTRAINT "models_job_id_fine_tuning_jobs_id_fk" FOREIGN KEY ("job_id") REFERENCES "public"."fine_tuning_jobs"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "ft_jobs_project_seq_idx" ON "fine_tuning_jobs" USING btree ("project_id","seq");--> statement-breakpoint
CREATE INDEX "ft_jobs_claim_idx" ON "fine_tuning_jobs" USING btree ("status","fair_rank","seq");--> statement-breakpoint
CREATE INDEX "ft_jobs_lease_idx" ON "fine_tuning_jobs" USING btree ("status","lease_expires_at");--> statement-breakpoint
CREATE INDEX "ft_jobs_fingerprint_idx" ON "fine_tuning_jobs" USING btree ("project_id","create_fingerprint");--> statement-breakpoint
CREATE UNIQUE INDEX "job_checkpoints_job_step_idx" ON "job_checkpoints" USING btree ("job_id","step_number");--> statement-breakpoint
CREATE INDEX "job_events_job_seq_idx" ON "job_events" USING btree ("job_id","seq");--> statement-breakpoint
CREATE INDEX "models_project_idx" ON "models" USING btree ("project_id");