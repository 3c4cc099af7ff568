import { Module } from '@nestjs/common';

import { JobProgressController } from './job-progress.controller.js';
import { JobsController } from './jobs.controller.js';
import { JobsService } from './jobs.service.js';

@Module({ controllers: [JobsController, JobProgressController], providers: [JobsService], exports: [JobsService] })
export class JobsModule {}
