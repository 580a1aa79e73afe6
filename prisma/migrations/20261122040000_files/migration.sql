-- CreateTable
CREATE TABLE "files" (
    "id" TEXT NOT NULL,
    "api_key_id" TEXT NOT NULL,
    "filename" TEXT NOT NULL,
    "purpose" TEXT NOT NULL,
    "bytes" BIGINT NOT NULL,
    "content_type" TEXT NOT NULL,
    "image" JSONB,
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "expires_at" TIMESTAMP(3),

    CONSTRAINT "files_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "files_api_key_id_id_idx" ON "files"("api_key_id", "id");

-- CreateIndex
CREATE INDEX "files_expires_at_idx" ON "files"("expires_at");

-- AddForeignKey
ALTER TABLE "files" ADD CONSTRAINT "files_api_key_id_fkey" FOREIGN KEY ("api_key_id") REFERENCES "api_keys"("id") ON DELETE RESTRICT ON UPDATE CASCADE;
